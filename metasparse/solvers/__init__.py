"""Batched solvers and proximal operators: pure math on tensors, no nn.Module."""

from metasparse.solvers.diagnostics import ConvergenceWarning, SolverInfo, row_sparsity
from metasparse.solvers.fista import fista
from metasparse.solvers.group_lasso_svm import GroupLassoSVM, svm_lambda1_max, svm_primal_weights
from metasparse.solvers.lasso import GroupLasso, group_lasso_lambda_max
from metasparse.solvers.prox import block_soft_threshold, project_simplex, soft_threshold
from metasparse.solvers.svm_objective import NonzeroRows

__all__ = [
    "ConvergenceWarning",
    "GroupLasso",
    "GroupLassoSVM",
    "NonzeroRows",
    "SolverInfo",
    "block_soft_threshold",
    "fista",
    "group_lasso_lambda_max",
    "project_simplex",
    "row_sparsity",
    "soft_threshold",
    "svm_lambda1_max",
    "svm_primal_weights",
]
