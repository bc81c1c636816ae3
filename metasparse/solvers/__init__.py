"""Batched solvers and proximal operators: pure math on tensors, no nn.Module."""
