"""Forward + backward time per meta-batch for every head and backend, and cvxpylayers' gradient accuracy.

    python benchmarks/heads.py                 # or: metasparse bench heads
    python benchmarks/heads.py --quick         # a one-minute check, written to results/heads-quick.*
    python benchmarks/heads.py --device cuda   # on a GPU (see benchmarks/gpu.sh)

Episodes are 5-way, {1, 5, 15}-shot with 15 queries per class, features ReLU(class mean + noise) of
dimension d in {64, 640, 1600, 16000}, a meta-batch of 8 episodes, float32 inputs (cvxpylayers solves in
float64 inside). One step = head forward on support and query features that require gradients,
cross-entropy on the query, backward. The group-lasso weight is 0.3 x the median lambda1_max of the
batch. The native heads and qpth's take their steps in turn (one step of each, ``--repeats`` rounds), so
that their ratios compare the same moments of a shared machine; at d = 16000 the group-lasso head is also
run at 0.1, 0.3 and 0.6 x (the sweep), its steps alternated with the SVM head's and qpth's. Times are
medians over repeats. The cvxpylayers / native ratio is that of the medians of cvxpylayers steps and
native steps taken alternately (3 of each, 1 where a cvxpylayers forward takes over 30 s).

The column "MetaOptNet SVM, qpth" is MetaOptNet's own SVM head (``MetaOptNetHead_SVM_CS``: its QP
through qpth, ``maxIter=15`` as in its training, float32); qpth is not a dependency of metasparse:

    pip install --no-deps qpth                 # then rerun; without it the column is skipped

Writes JSON (all records) and a markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from metasparse.atomic import write_atomically
from metasparse.heads import GroupLassoSVMHead, ProtoNetHead, RidgeHead, SVMHead
from metasparse.solvers import svm_lambda1_max
from metasparse.tasks import random_episodes

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "heads.json"
LAMBDA2, DUAL_REG, LAMBDA1_RATIO = 10.0, 1.0, 0.3
CVX_REPEAT_BELOW_S = 30.0  # cvxpylayers steps are timed 3 times where a forward takes less, else once
SWEEP_RATIOS, SWEEP_DIM = (0.1, 0.3, 0.6), 16000
QPTH = "MetaOptNet SVM, qpth"
QPTH_MAX_ITER = 15  # MetaOptNet's training setting (3 at test time)


class MetaOptNetSVMHead(torch.nn.Module):
    """MetaOptNet's ``MetaOptNetHead_SVM_CS`` (kjunelee/MetaOptNet, models/classification_heads.py): the
    Crammer-Singer dual QP with the ``+1.0 * I`` on its kernel, solved by qpth; C = 0.1 (``lambda2 = 10``)."""

    def __init__(self, c_reg: float = 1 / LAMBDA2, max_iter: int = QPTH_MAX_ITER) -> None:
        super().__init__()
        self.c_reg, self.max_iter = c_reg, max_iter
        self.last_info = None

    def forward(self, query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor,
                n_way: int) -> torch.Tensor:
        from qpth.qp import QPFunction

        batch, n, _ = support.shape
        dtype, device = support.dtype, support.device
        kernel = support @ support.transpose(1, 2)
        eye_k = torch.eye(n_way, dtype=dtype, device=device)
        block = kernel[:, :, None, :, None] * eye_k[None, None, :, None, :]
        block = block.reshape(batch, n * n_way, n * n_way) + torch.eye(n * n_way, dtype=dtype, device=device)
        onehot = torch.nn.functional.one_hot(labels, n_way).to(dtype).reshape(batch, n * n_way)
        inequality = torch.eye(n * n_way, dtype=dtype, device=device).expand(batch, -1, -1)
        rows = torch.kron(torch.eye(n, dtype=dtype, device=device), torch.ones(1, n_way, dtype=dtype,
                                                                                device=device))
        solution = QPFunction(verbose=False, maxIter=self.max_iter)(
            block, -onehot, inequality, self.c_reg * onehot, rows.expand(batch, -1, -1),
            torch.zeros(batch, n, dtype=dtype, device=device))
        compatibility = support @ query.transpose(1, 2)
        return torch.einsum("bsq,bsk->bqk", compatibility, solution.reshape(batch, n, n_way))


def qpth_available() -> bool:
    """Whether qpth can be imported (``pip install --no-deps qpth``)."""
    try:
        import qpth.qp  # noqa: F401
    except ImportError:
        return False
    return True


def make_heads(lambda1: float, with_cvxpylayers: bool, with_qpth: bool) -> dict[str, torch.nn.Module]:
    """The heads timed for one configuration, by label."""
    heads = {
        "group-lasso SVM, native": GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG),
        "group-lasso SVM, native 5 it.": GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG, max_iter=5, tol=None),
        "SVM, native": SVMHead(C=1 / LAMBDA2, dual_reg=DUAL_REG),
        "ridge": RidgeHead(),
        "ProtoNet": ProtoNetHead(),
    }
    if with_qpth:
        heads[QPTH] = MetaOptNetSVMHead()
    if with_cvxpylayers:
        heads["group-lasso SVM, cvxpylayers"] = GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG,
                                                                  solver="cvxpylayers")
    return heads


def time_step(head: torch.nn.Module, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
              query_labels: torch.Tensor, repeats: int) -> list[float]:
    """Seconds of forward + backward, ``repeats`` times."""
    times = []
    for _ in range(repeats):
        s, q = support.clone().requires_grad_(True), query.clone().requires_grad_(True)
        start = time.perf_counter()
        logits = head(q, s, labels, 5)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), query_labels.flatten()).backward()
        if s.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def describe(timed: torch.nn.Module, times: list[float], **fields: object) -> dict:
    """One record: the fields, the median of ``times`` and what the ``timed`` head's ``last_info`` says."""
    record = {**fields, "seconds": median(times), "seconds_all": times}
    info = timed.last_info
    if info is not None:
        record.update({
            "iterations_max": int(info.iterations.max()), "converged": int(info.converged.sum()),
            "fixed_iterations": info.fixed_iterations, "sparsity_mean": float(info.sparsity.float().mean()),
            "active_mean": float(info.active.float().mean()),
            "gradient_trusted": None if info.gradient_trusted is None else int(info.gradient_trusted.sum())})
    return record


def print_record(record: dict) -> None:
    label = record["head"] + (f" @ {record['lambda1_ratio']} x max" if record.get("sweep") else "")
    if "failed" in record:
        print(f"{record['shots']:>2}-shot d={record['d']:<6} {label:<36} failed: {record['failed'][:80]}",
              flush=True)
        return
    line = f"{record['shots']:>2}-shot d={record['d']:<6} {label:<36} {1000 * record['seconds']:9.1f} ms"
    if "iterations_max" in record:
        line += (f"  it {record['iterations_max']:>5}  conv {record['converged']}/{record['batch']}  "
                 f"zero rows {record['sparsity_mean']:.3f}")
    marks = (("ratio_to_native", "cvx/native"), ("ratio_to_svm", "/ SVM"), ("ratio_to_qpth", "/ qpth"))
    for key, mark in marks:
        if key in record:
            line += f"  {mark} {record[key]:.2f}"
    print(line, flush=True)


def run_speed(shots: list[int], dims: list[int], batch: int, repeats: int, cvx_max_nd: int,
              device: str, with_qpth: bool) -> list[dict]:
    """Time every head for every (shots, d), and the lambda1 sweep at d = 16000; one record per
    (head, shots, d[, lambda1 ratio])."""
    records = []
    for shot in shots:
        for dim in dims:
            support, labels, query, query_labels = (
                t.to(device) for t in random_episodes(batch, 5, shot, 15, dim, seed=shot * 100_000 + dim))
            onehot = torch.nn.functional.one_hot(labels, 5).to(support.dtype)
            lambda1_max = float(svm_lambda1_max(support, onehot, LAMBDA2, DUAL_REG).median())
            lambda1 = LAMBDA1_RATIO * lambda1_max
            cvx = device == "cpu" and 5 * shot * dim <= cvx_max_nd
            heads = make_heads(lambda1, cvx, with_qpth)
            common = {"shots": shot, "d": dim, "n": 5 * shot, "batch": batch, "device": device,
                      "lambda1": lambda1, "lambda1_ratio": LAMBDA1_RATIO}

            episodes = (support, labels, query, query_labels)

            def step(head: torch.nn.Module, count: int, episodes: tuple = episodes) -> list[float]:
                return time_step(head, *episodes, count)

            # the first call warms up (and builds the cvxpylayers layer; forward only there, since a
            # cvxpylayers backward costs minutes at d = 640)
            first, caught = {}, {}
            for name, head in heads.items():
                head.to(device)
                with warnings.catch_warnings(record=True) as caught[name]:
                    warnings.simplefilter("always")
                    start = time.perf_counter()
                    try:
                        if "cvxpylayers" in name:
                            with torch.no_grad():
                                head(query, support, labels, 5)
                        else:
                            step(head, 1)
                    except Exception as error:  # qpth fails on some sizes: recorded, not fatal
                        if name != QPTH:
                            raise
                        records.append({"head": name, **common, "failed": f"{type(error).__name__}: {error}"})
                        print_record(records[-1])
                        continue
                    first[name] = time.perf_counter() - start
            # the native heads and qpth step in turn, so that their ratios compare the same moments of a
            # shared, noisy machine
            fast = [name for name in first if "cvxpylayers" not in name]
            times: dict[str, list[float]] = {name: [] for name in first}
            for _ in range(repeats):
                for name in fast:
                    with warnings.catch_warnings(record=True) as more:
                        warnings.simplefilter("always")
                        times[name] += step(heads[name], 1)
                    caught[name] += more
            extra: dict[str, dict] = {name: {} for name in first}
            for name in first:
                if "cvxpylayers" in name:
                    # alternated with the native head, 3 steps each (1 where a forward takes over 30 s)
                    native = heads["group-lasso SVM, native"]
                    native_times = []
                    for _ in range(3 if first[name] < CVX_REPEAT_BELOW_S else 1):
                        times[name] += step(heads[name], 1)
                        native_times += step(native, 1)
                    extra[name] = {"native_alternating_seconds": native_times,
                                   "ratio_to_native": median(times[name]) / median(native_times)}
            for name in first:
                messages = sorted({str(w.message)[:120] for w in caught[name]})
                record = describe(heads[name], times[name], head=name, **common, first_call=first[name],
                                  **extra[name], warnings=messages)
                records.append(record)
                print_record(record)
            if dim == SWEEP_DIM:
                references = {"svm": heads["SVM, native"]}
                if QPTH in first:
                    references["qpth"] = heads[QPTH]
                records += run_sweep(step, references, lambda1_max, common, repeats)
    return records


def run_sweep(step: Callable[[torch.nn.Module, int], list[float]], references: dict[str, torch.nn.Module],
              lambda1_max: float, common: dict, repeats: int) -> list[dict]:
    """The group-lasso head at each of `SWEEP_RATIOS` x lambda1_max, its steps alternated with those of
    the ``references`` (``"svm"``: the native SVM head; ``"qpth"``: MetaOptNet's, when installed);
    ``ratio_to_svm`` and ``ratio_to_qpth`` are the ratios of their medians."""
    records = []
    for ratio in SWEEP_RATIOS:
        head = GroupLassoSVMHead(ratio * lambda1_max, LAMBDA2, DUAL_REG).to(common["device"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step(head, 1)
            times: list[float] = []
            reference_times: dict[str, list[float]] = {key: [] for key in references}
            for _ in range(repeats):
                times += step(head, 1)
                for key, reference in references.items():
                    reference_times[key] += step(reference, 1)
        extra = {}
        for key, values in reference_times.items():
            extra[f"{key}_alternating_seconds"] = values
            extra[f"ratio_to_{key}"] = median(times) / median(values)
        record = describe(head, times, **{**common, "lambda1": ratio * lambda1_max, "lambda1_ratio": ratio},
                          head="group-lasso SVM, native", sweep=True, **extra,
                          warnings=sorted({str(w.message)[:120] for w in caught}))
        records.append(record)
        print_record(record)
    return records


def run_gradient_accuracy(batch: int) -> list[dict]:
    """dL/d(support) relative error of each backend setting against a tight float64 native solve."""
    support, labels, query, query_labels = random_episodes(batch, 5, 5, 15, 64, seed=7, dtype=torch.float64)
    onehot = torch.nn.functional.one_hot(labels, 5).to(support.dtype)
    lambda1 = LAMBDA1_RATIO * float(svm_lambda1_max(support, onehot, LAMBDA2, DUAL_REG).median())

    def gradient(head: torch.nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
        s = support.detach().to(dtype).clone().requires_grad_(True)
        start = time.perf_counter()
        logits = head(query.to(dtype), s, labels, 5)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), query_labels.flatten()).backward()
        return s.grad.double(), time.perf_counter() - start

    reference, _ = gradient(GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG, max_iter=100_000, tol=1e-12),
                            torch.float64)
    settings = {
        "cvxpylayers, solver_args={} (SCS eps 1e-4, diffcp mode lsqr)": ({}, torch.float64),
        "cvxpylayers, eps 1e-9, mode lsqr": ({"eps": 1e-9, "max_iters": 100_000, "n_jobs_forward": 1,
                                              "n_jobs_backward": 1}, torch.float64),
        "cvxpylayers, eps 1e-9, mode lsmr (metasparse default)": (None, torch.float64),
    }
    records = []
    for name, (solver_args, dtype) in settings.items():
        head = GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG, solver="cvxpylayers", solver_args=solver_args)
        gradient(head, dtype)  # builds the layer
        grad, seconds = gradient(head, dtype)
        records.append({"setting": name, "seconds": seconds,
                        "relative_error": float((grad - reference).norm() / reference.norm())})
    for name, head in {"native float32, tol 1e-4 (default)": GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG),
                       "native float64, tol 1e-4": GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG),
                       "native float32, 5 iterations (tol=None)":
                           GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG, max_iter=5, tol=None)}.items():
        dtype = torch.float32 if "float32" in name else torch.float64
        gradient(head, dtype)
        grad, seconds = gradient(head, dtype)
        records.append({"setting": name, "seconds": seconds,
                        "relative_error": float((grad - reference).norm() / reference.norm())})
    for record in records:
        print(f"{record['setting']:<60} {1000 * record['seconds']:9.1f} ms  "
              f"grad rel. error {record['relative_error']:.1e}", flush=True)
    return records


def speed_table(records: list[dict]) -> str:
    """Markdown: one row per (shots, d), ms per meta-batch per head, and cvxpylayers / native."""
    grid = [r for r in records if not r.get("sweep")]
    heads = list(dict.fromkeys(r["head"] for r in grid))
    rows = ["| shots | d | " + " | ".join(heads) + " | cvxpylayers / native |",
            "|---|---|" + "---|" * (len(heads) + 1)]
    for shot, dim in dict.fromkeys((r["shots"], r["d"]) for r in grid):
        cells = {r["head"]: r for r in grid if (r["shots"], r["d"]) == (shot, dim)}

        def cell(name: str, cells: dict = cells) -> str:
            if name not in cells:
                return "–"
            r = cells[name]
            if "failed" in r:
                return "fails"
            done = "converged" not in r or r["fixed_iterations"] or r["converged"] == r["batch"]
            mark = "" if done else f" ({r['converged']}/{r['batch']} conv.)"
            return f"{1000 * r['seconds']:.1f}{mark}"

        ratio = "–"
        if "group-lasso SVM, cvxpylayers" in cells:
            ratio = f"{cells['group-lasso SVM, cvxpylayers']['ratio_to_native']:.0f}×"
        rows.append(f"| {shot} | {dim} | " + " | ".join(cell(h) for h in heads) + f" | {ratio} |")
    return "\n".join(rows)


def sweep_table(records: list[dict]) -> str:
    """Markdown: the lambda1 sweep, group lasso against the SVM head in alternated steps."""
    rows = ["| shots | d | lambda1 / lambda1_max | group lasso ms | SVM ms | group lasso / SVM | qpth ms | "
            "group lasso / qpth | converged | iterations max | features in use (mean) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r.get("sweep"):
            qpth = (f"{1000 * median(r['qpth_alternating_seconds']):.0f} | {r['ratio_to_qpth']:.2f}"
                    if "ratio_to_qpth" in r else "– | –")
            rows.append(f"| {r['shots']} | {r['d']} | {r['lambda1_ratio']} | {1000 * r['seconds']:.0f} | "
                        f"{1000 * median(r['svm_alternating_seconds']):.0f} | {r['ratio_to_svm']:.2f} | "
                        f"{qpth} | {r['converged']}/{r['batch']} | {r['iterations_max']} | "
                        f"{r['active_mean']:.0f} |")
    return "\n".join(rows)


def accuracy_table(records: list[dict]) -> str:
    rows = ["| setting | ms per meta-batch | dL/dX relative error |", "|---|---|---|"]
    rows += [f"| {r['setting']} | {1000 * r['seconds']:.1f} | {r['relative_error']:.1e} |" for r in records]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 15])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 640, 1600, 16000])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cvx-max-nd", type=int, default=None,
                        help="run cvxpylayers only where n * d is at most this (its memory grows like n d^2; "
                             "default 16000, 1600 with --quick: one 5-shot, d = 640 step takes minutes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON file (default {DEFAULT_OUT.name}, heads-quick.json with --quick, in "
                             f"{DEFAULT_OUT.parent}); a markdown table is written beside it")
    parser.add_argument("--quick", action="store_true",
                        help="5-shot, d in {64, 640}, 2 repeats, cvxpylayers at d = 64 only")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); 1 on a shared, busy machine, where "
                             "every multi-threaded op waits for a descheduled thread")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.shots, args.dims, args.repeats = [5], [64, 640], 2
    if args.cvx_max_nd is None:
        args.cvx_max_nd = 25 * 64 if args.quick else 25 * 640
    if args.out is None:
        args.out = DEFAULT_OUT.with_name("heads-quick.json") if args.quick else DEFAULT_OUT

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, device {args.device}"
               + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    print(machine)
    with_qpth = qpth_available()
    if not with_qpth:
        print(f"qpth is not installed: the {QPTH!r} column is skipped (pip install --no-deps qpth)")
    speed = run_speed(args.shots, args.dims, args.batch, args.repeats, args.cvx_max_nd, args.device,
                      with_qpth)
    accuracy = run_gradient_accuracy(args.batch) if args.device == "cpu" else []
    results = {"machine": machine, "speed": speed, "gradient_accuracy": accuracy}
    write_atomically(args.out, lambda path: path.write_text(json.dumps(results, indent=1)))
    table = (f"Machine: {machine}\n\nms per meta-batch of {args.batch} episodes (forward + backward):\n\n"
             f"{speed_table(speed)}\n")
    if any(r.get("sweep") for r in speed):
        table += (f"\nGroup lasso over lambda1 at d = {SWEEP_DIM}, steps alternated with the SVM head's and "
                  f"qpth's:\n\n"
                  f"{sweep_table(speed)}\n")
    if accuracy:
        table += f"\nGradient accuracy, 5-way 5-shot, d = 64:\n\n{accuracy_table(accuracy)}\n"
    write_atomically(args.out.with_suffix(".md"), lambda path: path.write_text(table))
    print("\n" + table + f"\nwrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
