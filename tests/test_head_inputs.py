"""Every head fed edge and bad inputs: no silent NaN or inf, no wrong answer reported as converged, and every
bad input a ValueError naming its argument.

A converged solve is checked against an independent cvxpy (Clarabel) or closed-form reference through the
distance its reported residual allows: for the group-lasso SVM, whose primal is lambda2-strongly convex,
``||W - W*||^2 <= 2 r P(W) / lambda2`` for a relative gap r; for the lasso
``||Phi (w - w*)|| <= sqrt(r) ||y||``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from helpers import CLARABEL_TIGHT

from metasparse.heads import GroupLassoSVMHead, LassoHead, ProtoNetHead, RidgeHead, SVMHead
from metasparse.heads.validation import has_nonfinite
from metasparse.solvers.cvxpy_problems import group_lasso_regression_problem, group_lasso_svm_problem

CLASSIFIERS: dict[str, Callable[[], torch.nn.Module]] = {
    "group_lasso_svm": lambda: GroupLassoSVMHead(0.3),
    "group_lasso_ratio": lambda: GroupLassoSVMHead(lambda1_ratio=0.3),
    "svm": lambda: SVMHead(),
    "svm_metaoptnet_test": lambda: SVMHead.metaoptnet_test(),
    "group_lasso_cvxpylayers": lambda: GroupLassoSVMHead(0.3, solver="cvxpylayers"),
    "ridge": lambda: RidgeHead(),
    "protonet": lambda: ProtoNetHead(),
}
EDGE_CLASSIFIERS = ["group_lasso_svm", "group_lasso_ratio", "svm", "group_lasso_cvxpylayers", "ridge",
                    "protonet"]
REGRESSORS: dict[str, Callable[[], LassoHead]] = {
    "lasso": lambda: LassoHead(0.3),
    "lasso_cvxpylayers": lambda: LassoHead(0.3, solver="cvxpylayers"),
}

# --- bad inputs -----------------------------------------------------------------------------------------

_S, _L, _Q = torch.randn(2, 6, 4), torch.arange(3).repeat(2).expand(2, 6), torch.randn(2, 5, 4)
NAN, INF = float("nan"), float("inf")


def _with(tensor: torch.Tensor, value: float) -> torch.Tensor:
    out = tensor.clone()
    out.view(-1)[3] = value
    return out


# (what, query, support, support_labels, n_way, n_shot, the argument the message must name)
BAD_CLASSIFICATION = [
    ("support is a list", _Q, _S.tolist(), _L, 3, None, "support"),
    ("support 1-D", _Q, torch.randn(6), _L, 3, None, "support"),
    ("support 4-D", _Q, _S[None], _L, 3, None, "support"),
    ("support int", _Q, _S.long(), _L, 3, None, "support"),
    ("support complex", _Q, _S.to(torch.complex64), _L, 3, None, "support"),
    ("support NaN", _Q, _with(_S, NAN), _L, 3, None, "support"),
    ("support +inf", _Q, _with(_S, INF), _L, 3, None, "support"),
    ("support -inf", _Q, _with(_S, -INF), _L, 3, None, "support"),
    ("support no rows", _Q, _S[:, :0], _L[:, :0], 3, None, "support"),
    ("support no features", _Q, _S[..., :0], _L, 3, None, "support"),
    ("labels a list", _Q, _S, _L.tolist(), 3, None, "support_labels"),
    ("labels float", _Q, _S, _L.float(), 3, None, "support_labels"),
    ("labels bool", _Q, _S, _L > 0, 3, None, "support_labels"),
    ("labels too short", _Q, _S, _L[:, :5], 3, None, "support_labels"),
    ("labels unbatched", _Q, _S, _L[0], 3, None, "support_labels"),
    ("labels negative", _Q, _S, _L - 1, 3, None, "support_labels"),
    ("labels >= n_way", _Q, _S, _L + 1, 3, None, "support_labels"),
    ("a class without support", _Q, _S, _L % 2, 3, None, "support_labels"),
    ("labels on another device", _Q, _S, _L.to("meta"), 3, None, "support_labels"),
    ("n_way 0", _Q, _S, _L, 0, None, "n_way"),
    ("n_way negative", _Q, _S, _L, -3, None, "n_way"),
    ("n_way float", _Q, _S, _L, 3.0, None, "n_way"),
    ("n_way str", _Q, _S, _L, "3", None, "n_way"),
    ("n_way bool", _Q, _S, _L, True, None, "n_way"),
    ("n_way None", _Q, _S, _L, None, None, "n_way"),
    ("n_shot 0", _Q, _S, _L, 3, 0, "n_shot"),
    ("n_shot float", _Q, _S, _L, 3, 2.0, "n_shot"),
    ("n_shot wrong", _Q, _S, _L, 3, 3, "n_shot"),
    ("query is a list", _Q.tolist(), _S, _L, 3, None, "query"),
    ("query 1-D", torch.randn(4), _S, _L, 3, None, "query"),
    ("query unbatched", _Q[0], _S, _L, 3, None, "query"),
    ("query int", _Q.long(), _S, _L, 3, None, "query"),
    ("query NaN", _with(_Q, NAN), _S, _L, 3, None, "query"),
    ("query inf", _with(_Q, INF), _S, _L, 3, None, "query"),
    ("query no rows", _Q[:, :0], _S, _L, 3, None, "query"),
    ("query feature size", _Q[..., :3], _S, _L, 3, None, "query"),
    ("query batch size", _Q[:1], _S, _L, 3, None, "query"),
    ("query float64", _Q.double(), _S, _L, 3, None, "query"),
    ("query half", _Q.half(), _S, _L, 3, None, "query"),
    ("query on another device", _Q.to("meta"), _S, _L, 3, None, "query"),
]

_F, _T = torch.randn(2, 8, 4), torch.randn(2, 8)
# (what, query, features, targets, the argument the message must name)
BAD_REGRESSION = [
    ("features a list", _Q, _F.tolist(), _T, "features"),
    ("features 1-D", _Q, torch.randn(8), _T, "features"),
    ("features int", _Q, _F.long(), _T, "features"),
    ("features NaN", _Q, _with(_F, NAN), _T, "features"),
    ("features inf", _Q, _with(_F, INF), _T, "features"),
    ("features no rows", _Q, _F[:, :0], _T[:, :0], "features"),
    ("targets a list", _Q, _F, _T.tolist(), "targets"),
    ("targets int", _Q, _F, _T.long(), "targets"),
    ("targets NaN", _Q, _F, _with(_T, NAN), "targets"),
    ("targets inf", _Q, _F, _with(_T, -INF), "targets"),
    ("targets too short", _Q, _F, _T[:, :7], "targets"),
    ("targets float64", _Q, _F, _T.double(), "targets"),
    ("targets on another device", _Q, _F, _T.to("meta"), "targets"),
    ("query NaN", _with(_Q, NAN), _F, _T, "query"),
    ("query feature size", _Q[..., :3], _F, _T, "query"),
    ("query float64", _Q.double(), _F, _T, "query"),
]


def _unnamed(calls: list[tuple[str, Callable[[], object], str]]) -> list[str]:
    """The calls that do not raise a ValueError naming their argument, with what they did instead."""
    failures = []
    for what, call, argument in calls:
        try:
            call()
        except ValueError as error:
            if argument not in str(error):
                failures.append(f"{what}: {error}")
        else:
            failures.append(f"{what}: accepted")
    return failures


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_bad_classification_input_is_a_value_error_naming_its_argument(name):
    head = CLASSIFIERS[name]()
    calls = []
    for what, query, support, labels, n_way, n_shot, argument in BAD_CLASSIFICATION:
        calls.append((f"{what} (forward)", lambda q=query, s=support, y=labels, k=n_way, m=n_shot:
                      head(q, s, y, k, m), argument))
        if argument == "query":
            calls.append((f"{what} (after fit_)", lambda q=query: head(q), argument))
        elif n_shot is None and n_way is not None:
            for method in (head.solve, head.fit_):
                calls.append((f"{what} ({method.__name__})",
                              lambda s=support, y=labels, k=n_way, f=method: f(s, y, k), argument))
    assert len(calls) == 100
    head.fit_(_S, _L, 3)  # for the calls on a query alone; failed calls never replace the fitted weights
    assert _unnamed(calls) == []


@pytest.mark.parametrize("name", REGRESSORS)
def test_every_bad_regression_input_is_a_value_error_naming_its_argument(name):
    head = REGRESSORS[name]()
    calls = []
    for what, query, features, targets, argument in BAD_REGRESSION:
        calls.append((f"{what} (forward)", lambda q=query, f=features, t=targets: head(q, f, t), argument))
        if argument == "query":
            calls.append((f"{what} (after fit_)", lambda q=query: head(q), argument))
        else:
            calls.append((f"{what} (solve)", lambda f=features, t=targets: head.solve(f, t), argument))
            calls.append((f"{what} (fit_)", lambda f=features, t=targets: head.fit_(f, t), argument))
    head.fit_(_F, _T)
    assert _unnamed(calls) == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_has_nonfinite_agrees_with_the_entrywise_check(dtype):
    generator = torch.Generator().manual_seed(0)
    finfo = torch.finfo(dtype)
    cases = [torch.zeros(0, 3, dtype=dtype), torch.full((3, 70), finfo.max, dtype=dtype),
             torch.full((2, 50), finfo.min, dtype=dtype), torch.full((4,), finfo.tiny / 2, dtype=dtype)]
    for _ in range(40):
        tensor = torch.randn(3, 37, 29, generator=generator).to(dtype)
        for value in torch.tensor([NAN, INF, -INF], dtype=dtype)[torch.rand(3, generator=generator) < 0.4]:
            tensor.view(-1)[torch.randint(tensor.numel(), (1,), generator=generator)] = value
        cases.append(tensor)
    for tensor in cases:
        expected = not bool(torch.isfinite(tensor).all())
        assert bool(has_nonfinite(tensor)) == expected
    assert sum(not bool(torch.isfinite(t).all()) for t in cases) > 10  # both answers were exercised


# --- edge inputs: legal, so answered; finite; right whenever reported converged ------------------------


def _episodes(n_way: int, n_shot: int, d: int, seed: int, scale: float = 1.0,
              dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_way).repeat(n_shot).expand(2, -1)
    means = torch.randn(2, n_way, d, generator=generator, dtype=torch.float64)
    support = means.gather(1, labels[..., None].expand(2, n_way * n_shot, d))
    support = support + 0.7 * torch.randn(support.shape, generator=generator, dtype=torch.float64)
    return (scale * support).to(dtype), labels


def _duplicated(support: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return support.repeat(1, 2, 1), labels.repeat(1, 2)


_THREE_WAY_LABELS = torch.arange(3).repeat(2).expand(2, -1)
EDGE_CLASSIFICATION = {
    "one class": lambda: _episodes(1, 4, 6, 0),
    "one shot": lambda: _episodes(5, 1, 6, 1),
    "one feature": lambda: _episodes(3, 3, 1, 2),
    "ten ways one shot": lambda: _episodes(10, 1, 8, 3),
    "zero features": lambda: (torch.zeros(2, 6, 5, dtype=torch.float64), _THREE_WAY_LABELS),
    "identical samples": lambda: (torch.ones(2, 6, 5, dtype=torch.float64), _THREE_WAY_LABELS),
    "duplicated samples": lambda: _duplicated(*_episodes(3, 2, 6, 4)),
    "scale 1e-3": lambda: _episodes(3, 3, 8, 5, scale=1e-3),
    "scale 1e3": lambda: _episodes(3, 3, 8, 6, scale=1e3),
    "scale 1e4": lambda: _episodes(3, 3, 8, 7, scale=1e4),
    "float32 scale 1e-3": lambda: _episodes(3, 3, 8, 8, scale=1e-3, dtype=torch.float32),
    "float32 scale 1e3": lambda: _episodes(3, 3, 8, 9, scale=1e3, dtype=torch.float32),
    "float32 scale 1e4": lambda: _episodes(3, 3, 8, 10, scale=1e4, dtype=torch.float32),
    "one huge feature": lambda: (lambda s, y: (s * torch.tensor([1e3] + [1.0] * 7, dtype=s.dtype), y))(
        *_episodes(3, 3, 8, 11)),
}


def _project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of ``v`` onto the probability simplex (sort-based)."""
    u = -np.sort(-v, axis=-1)
    cumulative = np.cumsum(u, axis=-1) - 1
    ranks = np.arange(1, v.shape[-1] + 1)
    count = (u - cumulative / ranks > 0).sum(axis=-1, keepdims=True)
    threshold = np.take_along_axis(cumulative, count - 1, axis=-1) / count
    return np.maximum(v - threshold, 0)


def svm_objective(w: np.ndarray, x: np.ndarray, y: np.ndarray, lambda1: float, lambda2: float,
                  dual_reg: float) -> float:
    """P(W) of the group-lasso SVM (DESIGN.md), written here from the formula, not from the package."""
    eps = dual_reg / lambda2
    scores = x @ w
    margins = scores + 1 - y
    a = _project_simplex(y + margins / eps)
    hinge = (a * margins).sum(-1) - (scores * y).sum(-1) - eps / 2 * ((a - y) ** 2).sum(-1)
    return float(hinge.sum() + lambda2 / 2 * (w**2).sum() + lambda1 * np.linalg.norm(w, axis=1).sum())


def lasso_objective(w: np.ndarray, x: np.ndarray, y: np.ndarray, lam: float) -> float:
    """(1/2n) ||X W - Y||^2 + lam sum_j ||W_j||, from the formula."""
    return float(((x @ w - y) ** 2).sum() / (2 * len(x)) + lam * np.linalg.norm(w, axis=1).sum())


def _allowed_distance(residual_gap: float, primal: float, reference_primal: float, curvature: float) -> float:
    """How far a solution may be from a reference solution when its objective ``primal`` is within
    ``residual_gap`` (absolute) of the optimum and the objective is ``curvature``-strongly convex in the
    measured distance: ``sqrt(2 gap / curvature)`` for it plus the same for the reference, whose own gap is
    at most ``reference_primal - (primal - residual_gap)``."""
    own = max(residual_gap, 0.0)
    reference = max(reference_primal - (primal - own), 0.0)
    return math.sqrt(2 * own / curvature) + math.sqrt(2 * reference / curvature)


def _svm_reference(support: np.ndarray, onehot: np.ndarray, lambda1: float, lambda2: float,
                   dual_reg: float) -> np.ndarray:
    import cvxpy as cp

    n, d = support.shape
    problem, (x, y), (w,) = group_lasso_svm_problem(n, d, onehot.shape[1], lambda1, lambda2, dual_reg)
    x.value, y.value = support, onehot
    problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    return w.value


def _within_certificate(name: str, head: torch.nn.Module, support: torch.Tensor, labels: torch.Tensor,
                        n_way: int, weights: torch.Tensor) -> list[str]:
    """For each task reported converged: the distance to the reference allowed by the reported residual."""
    info = head.last_info
    x64, w64 = support.double(), weights.detach().double()
    onehot = torch.nn.functional.one_hot(labels, n_way).double()
    wrong = []
    for b in range(support.shape[0]):
        if not bool(info.converged[b]):
            continue
        x, y, w = x64[b].numpy(), onehot[b].numpy(), w64[b].numpy()
        if name == "ridge":
            reference, allowed = 2 * x.T @ np.linalg.solve(x @ x.T + head.lam * np.eye(len(x)), y), 0.0
        elif name == "protonet":
            reference, allowed = x.T @ (y / y.sum(0)), 0.0
        else:
            lambda1 = (head.lambda1 if head.lambda1 is not None
                       else head.lambda1_ratio * float(head.lambda1_max(support[b], labels[b], n_way)))
            reference = _svm_reference(x, y, lambda1, head.lambda2, head.dual_reg)
            objective = [svm_objective(v, x, y, lambda1, head.lambda2, head.dual_reg) for v in (w, reference)]
            # the residual is the relative gap (P - D) / P, so P - P* <= residual * P
            allowed = _allowed_distance(float(info.residual[b]) * objective[0], *objective, head.lambda2)
        # float32 weights are rounded by 6e-8 relative; Clarabel's weights are good to about 1e-8
        slack = (1e-6 if weights.dtype == torch.float32 else 1e-7) * (1 + np.linalg.norm(reference))
        distance = np.linalg.norm(w - reference)
        if not distance <= allowed * 1.01 + slack:
            wrong.append(f"task {b}: |W - W*| = {distance:.2e}, residual {float(info.residual[b]):.2e} "
                         f"allows {allowed:.2e}")
    return wrong


# where the SVM solver runs its full max_iter with Newton steps: seconds each on this machine
_SLOW = {("svm", "one huge feature"), ("svm", "scale 1e4"), ("svm", "float32 scale 1e4")}


# the ratio head differs from the absolute one in how lambda1 is set: the cases where that matters
_RATIO_CASES = ("one class", "one shot", "zero features", "scale 1e-3", "scale 1e4", "float32 scale 1e4")


@pytest.mark.parametrize(("name", "case"), [
    pytest.param(name, case, marks=[pytest.mark.slow] if (name, case) in _SLOW else [])
    for name in EDGE_CLASSIFIERS for case in EDGE_CLASSIFICATION
    if name != "group_lasso_ratio" or case in _RATIO_CASES])
def test_edge_classification_inputs_are_finite_and_right_when_converged(name, case):
    support, labels = EDGE_CLASSIFICATION[case]()
    n_way = int(labels.max()) + 1
    query = torch.randn(2, 4, support.shape[-1], dtype=support.dtype,
                        generator=torch.Generator().manual_seed(99)) * support.abs().amax().clamp_min(1)
    head = CLASSIFIERS[name]()
    support = support.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missed tol is said, not silent: checked through last_info
        with torch.no_grad():
            logits = head(query, support, labels, n_way)
        weights = head.solve(support, labels, n_way)
    weights.pow(2).sum().backward()
    for what, tensor in (("weights", weights), ("logits", logits), ("support gradient", support.grad)):
        assert bool(torch.isfinite(tensor).all()), f"{what} not finite"
    info = head.last_info
    assert bool(torch.isfinite(info.residual[info.converged]).all()), "converged with a non-finite residual"
    assert _within_certificate(name, head, support.detach(), labels, n_way, weights) == []


EDGE_REGRESSION = {
    "zero targets": lambda f: (f, torch.zeros(f.shape[:-1], dtype=f.dtype)),
    "zero features": lambda f: (torch.zeros_like(f), f[..., 0]),
    "constant targets": lambda f: (f, torch.full(f.shape[:-1], 3.0, dtype=f.dtype)),
    "more features than samples": lambda f: (f[:, :3], f[:, :3, 0] - f[:, :3, 4]),
    "one sample": lambda f: (f[:, :1], f[:, :1, 1]),
    "duplicated columns": lambda f: (torch.cat([f, f], -1), f[..., 0] + f[..., 2]),
    "scale 1e4": lambda f: (1e4 * f, f[..., 0]),
    "scale 1e-3": lambda f: (1e-3 * f, 1e-3 * f[..., 0]),
    "multi-output": lambda f: (f, torch.stack([f[..., 0], -f[..., 1], f[..., 2] + f[..., 3]], -1)),
    "float32": lambda f: (f.float(), (f[..., 0] - f[..., 5]).float()),
}


@pytest.mark.parametrize("lambda_ratio", [0.3, 1.0, 5.0])
@pytest.mark.parametrize("case", EDGE_REGRESSION)
@pytest.mark.parametrize("solver", ["native", "cvxpylayers"])
def test_edge_regression_inputs_are_finite_and_right_when_converged(solver, case, lambda_ratio):
    import cvxpy as cp

    base = torch.randn(2, 12, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    features, targets = EDGE_REGRESSION[case](base)
    features = features.clone().requires_grad_(True)
    head = LassoHead(lambda_ratio, solver=solver)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = head.solve(features, targets)
    weights.sum().backward()
    assert bool(torch.isfinite(weights).all()) and bool(torch.isfinite(features.grad).all())
    info = head.last_info
    assert bool(torch.isfinite(info.residual[info.converged]).all())
    phi, y = features.detach().double(), targets.double()
    y = y[..., None] if y.ndim == 2 else y
    w = weights.detach().double()
    w = w[..., None] if w.ndim == 2 else w
    lam = lambda_ratio * torch.linalg.vector_norm(phi.transpose(1, 2) @ y, dim=-1).amax(-1) / phi.shape[1]
    for b in range(2):
        if not bool(info.converged[b]):
            continue
        n, d = phi.shape[1:]
        problem, (x, t, lam_param), (reference,) = group_lasso_regression_problem(n, d, y.shape[-1])
        x.value, t.value, lam_param.value = phi[b].numpy(), y[b].numpy(), float(lam[b])
        problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
        # the residual is the gap over ||y||^2 / (2n); (1/2n) ||Phi (w - w*)||^2 <= P(w) - P*
        gap = float(info.residual[b]) * float((y[b] ** 2).sum()) / (2 * n)
        objective = [lasso_objective(v, phi[b].numpy(), y[b].numpy(), float(lam[b]))
                     for v in (w[b].numpy(), reference.value)]
        allowed = _allowed_distance(gap, *objective, 1 / n)
        distance = np.linalg.norm(phi[b].numpy() @ (w[b].numpy() - reference.value))
        slack = (1e-6 if targets.dtype == torch.float32 else 1e-7) * (1 + np.linalg.norm(y[b].numpy()))
        assert distance <= allowed * 1.01 + slack, (b, distance, allowed)
        if lambda_ratio >= 1:
            assert bool((weights[b] == 0).all())


def test_cvxpylayers_heads_on_degenerate_inputs_are_finite_and_right_when_converged():
    support, labels = EDGE_CLASSIFICATION["zero features"]()
    head = CLASSIFIERS["group_lasso_cvxpylayers"]()
    weights = head.solve(support, labels, 3)
    assert bool((weights == 0).all()) and bool(head.last_info.converged.all())
    features = torch.zeros(2, 10, 4, dtype=torch.float64)
    regression = REGRESSORS["lasso_cvxpylayers"]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = regression.solve(features, torch.randn(2, 10, dtype=torch.float64))
    assert bool((weights == 0).all()) and bool(torch.isfinite(regression.last_info.residual).all())


def test_the_certificate_check_catches_an_answer_off_by_one_percent():
    support, labels = _episodes(3, 3, 6, 12)
    for name in ("group_lasso_svm", "ridge", "protonet"):
        head = CLASSIFIERS[name]()
        weights = head.solve(support, labels, 3)
        assert bool(head.last_info.converged.all())
        assert _within_certificate(name, head, support, labels, 3, weights) == []
        assert len(_within_certificate(name, head, support, labels, 3, 1.01 * weights)) == 2
