"""Forward + backward time per meta-batch for every head and backend, and cvxpylayers' gradient accuracy.

    python benchmarks/heads.py                 # or: metasparse bench heads
    python benchmarks/heads.py --quick         # a one-minute subset

Episodes are 5-way, {1, 5, 15}-shot with 15 queries per class, features ReLU(class mean + noise) of
dimension d in {64, 640, 1600, 16000}, a meta-batch of 8 episodes, float32 inputs (cvxpylayers solves in
float64 inside). One step = head forward on support and query features that require gradients,
cross-entropy on the query, backward. The group-lasso weight is 0.3 x the median lambda1_max of the
batch. Times are medians over repeats. The cvxpylayers / native ratio is that of the medians of
cvxpylayers steps and native steps taken alternately (3 of each, 1 where a cvxpylayers forward takes
over 30 s), so that both see the same moments of a shared machine.

Writes JSON (all records) and a markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import torch

from metasparse.atomic import write_atomically
from metasparse.demo import random_episodes
from metasparse.heads import GroupLassoSVMHead, ProtoNetHead, RidgeHead, SVMHead
from metasparse.solvers import svm_lambda1_max

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "heads.json"
LAMBDA2, DUAL_REG, LAMBDA1_RATIO = 10.0, 1.0, 0.3
CVX_REPEAT_BELOW_S = 30.0  # cvxpylayers steps are timed 3 times where a forward takes less, else once


def make_heads(lambda1: float, with_cvxpylayers: bool) -> dict[str, torch.nn.Module]:
    """The heads timed for one configuration, by label."""
    heads = {
        "group-lasso SVM, native": GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG),
        "group-lasso SVM, native 5 it.": GroupLassoSVMHead(lambda1, LAMBDA2, DUAL_REG, max_iter=5, tol=None),
        "SVM, native": SVMHead(C=1 / LAMBDA2, dual_reg=DUAL_REG),
        "ridge": RidgeHead(),
        "ProtoNet": ProtoNetHead(),
    }
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


def run_speed(shots: list[int], dims: list[int], batch: int, repeats: int, cvx_max_nd: int,
              device: str) -> list[dict]:
    """Time every head for every (shots, d); returns one record per (head, shots, d)."""
    records = []
    for shot in shots:
        for dim in dims:
            support, labels, query, query_labels = (
                t.to(device) for t in random_episodes(batch, 5, shot, 15, dim, seed=shot * 100_000 + dim))
            onehot = torch.nn.functional.one_hot(labels, 5).to(support.dtype)
            lambda1 = LAMBDA1_RATIO * float(svm_lambda1_max(support, onehot, LAMBDA2, DUAL_REG).median())
            cvx = device == "cpu" and 5 * shot * dim <= cvx_max_nd
            heads = make_heads(lambda1, cvx)
            for name, head in heads.items():
                head.to(device)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    # the first call warms up (and builds the cvxpylayers layer; forward only there, since
                    # a cvxpylayers backward costs minutes at d = 640)
                    start = time.perf_counter()
                    if "cvxpylayers" in name:
                        with torch.no_grad():
                            head(query, support, labels, 5)
                    else:
                        time_step(head, support, labels, query, query_labels, 1)
                    first = time.perf_counter() - start
                    if "cvxpylayers" in name:
                        # alternate with the native head, so that the ratio compares the same moments
                        # of a shared, noisy machine
                        native = heads["group-lasso SVM, native"]
                        pairs = 3 if first < CVX_REPEAT_BELOW_S else 1
                        times, native_times = [], []
                        for _ in range(pairs):
                            times += time_step(head, support, labels, query, query_labels, 1)
                            native_times += time_step(native, support, labels, query, query_labels, 1)
                    else:
                        times = time_step(head, support, labels, query, query_labels, repeats)
                info = head.last_info
                record = {
                    "head": name, "shots": shot, "d": dim, "n": 5 * shot, "batch": batch, "device": device,
                    "seconds": sorted(times)[len(times) // 2], "seconds_all": times, "first_call": first,
                    "iterations_max": int(info.iterations.max()),
                    "converged": int(info.converged.sum()), "fixed_iterations": info.fixed_iterations,
                    "sparsity_mean": float(info.sparsity.float().mean()),
                    "active_mean": float(info.active.float().mean()), "lambda1": lambda1,
                    "warnings": sorted({str(w.message)[:120] for w in caught}),
                }
                if "cvxpylayers" in name:
                    native_median = sorted(native_times)[len(native_times) // 2]
                    record["native_alternating_seconds"] = native_times
                    record["ratio_to_native"] = record["seconds"] / native_median
                records.append(record)
                print(f"{shot:>2}-shot d={dim:<6} {name:<30} {1000 * record['seconds']:9.1f} ms  "
                      f"it {record['iterations_max']:>5}  conv {record['converged']}/{batch}  "
                      f"zero rows {record['sparsity_mean']:.3f}"
                      + (f"  ratio {record['ratio_to_native']:.0f}x" if "ratio_to_native" in record else ""),
                      flush=True)
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
    heads = list(dict.fromkeys(r["head"] for r in records))
    rows = ["| shots | d | " + " | ".join(heads) + " | cvxpylayers / native |",
            "|---|---|" + "---|" * (len(heads) + 1)]
    for shot, dim in dict.fromkeys((r["shots"], r["d"]) for r in records):
        cells = {r["head"]: r for r in records if (r["shots"], r["d"]) == (shot, dim)}

        def cell(name: str, cells: dict = cells) -> str:
            if name not in cells:
                return "–"
            r = cells[name]
            done = r["fixed_iterations"] or r["converged"] == r["batch"]
            mark = "" if done else f" ({r['converged']}/{r['batch']} conv.)"
            return f"{1000 * r['seconds']:.1f}{mark}"

        ratio = "–"
        if "group-lasso SVM, cvxpylayers" in cells:
            ratio = f"{cells['group-lasso SVM, cvxpylayers']['ratio_to_native']:.0f}×"
        rows.append(f"| {shot} | {dim} | " + " | ".join(cell(h) for h in heads) + f" | {ratio} |")
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
    parser.add_argument("--cvx-max-nd", type=int, default=25 * 640,
                        help="run cvxpylayers only where n * d is at most this (its memory grows like n d^2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="5-shot, d in {64, 640}, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.shots, args.dims, args.repeats = [5], [64, 640], 2

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, device {args.device}"
               + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    print(machine)
    speed = run_speed(args.shots, args.dims, args.batch, args.repeats, args.cvx_max_nd, args.device)
    accuracy = run_gradient_accuracy(args.batch) if args.device == "cpu" else []
    results = {"machine": machine, "speed": speed, "gradient_accuracy": accuracy}
    write_atomically(args.out, lambda path: path.write_text(json.dumps(results, indent=1)))
    table = (f"Machine: {machine}\n\nms per meta-batch of {args.batch} episodes (forward + backward):\n\n"
             f"{speed_table(speed)}\n")
    if accuracy:
        table += f"\nGradient accuracy, 5-way 5-shot, d = 64:\n\n{accuracy_table(accuracy)}\n"
    write_atomically(args.out.with_suffix(".md"), lambda path: path.write_text(table))
    print("\n" + table + f"\nwrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
