"""The paper's 3D Shapes disentanglement comparison and support-violation study, at four budgets.

Up to five studies, each a resumable sweep (`metasparse.experiments.disentangle.run_sweep`) under
``benchmarks/results/disentangle-<budget>/<study>/``:

* ``correlation``: inner lasso vs inner ridge vs ridge + ICA over the correlation rho;
* ``support``: inner lasso on block-support tasks (blocks of 2, 3, 6 factors);
* ``lambda``: inner lasso at other lambda / lambda_max (``paper`` and ``medium`` only);
* ``seeds``: inner lasso and ridge at rho = 0.9 with seeds 1 and 2 (``medium``), the inner lasso with
  seed 1 (``long``); the ``paper`` budget's correlation study already has three seeds;
* ``ridge``: inner ridge (and ridge + ICA) at other ridge ratios at rho = 0.9 (``paper`` and ``medium``).

Budgets (every other setting is `metasparse.train.bilevel.DisentangleConfig`'s default, the paper's
README run: 8 tasks of 25 + 25 shared samples, lambda = 0.3 lambda_max, AdamW 1e-3, rho = 0.9 where not
swept, jitter 1, noise ratio 0.1, non-empty Bernoulli(0.5) supports):

* ``paper`` (a GPU): 20,000 steps, validation on 1,000 tasks every 1,000 steps, evaluation on all
  480,000 images, FastICA on 250,000; rho in {0, 0.5, 0.8, 0.9, 0.95, 0.99}, seeds 0, 1, 2; blocks 2, 3, 6.
* ``reduced`` (the 2-core CPU build machine): 500 steps, validation on 64 tasks every 100 steps,
  evaluation on a uniform sample of 20,000 images, FastICA on 20,000; rho = 0.9, seed 0; block 2.
* ``long`` (the same CPU, one run per core, over one or more sittings): the paper's 20,000 steps with
  validation on 256 tasks every 1,000 steps and the reduced budget's evaluation; rho = 0.9, seed 0;
  blocks 2 and 3; the inner lasso with seed 1.
* ``medium`` (the same CPU, one run per core, about 20 minutes a run, over several sittings): 3,000
  steps, where the ``long`` lasso's validation MCC has reached 0.93 of its final 0.94, with validation
  on 256 tasks every 500 steps and the reduced evaluation; the paper's rho grid, seed 0; blocks 2 and 3;
  lambda 0.1, 0.2, 0.5 and 0.7 lambda_max; ridge ratios 0.03, 0.1, 0.3 and 1.

The ``lambda`` study runs the inner lasso at other lambda / lambda_max at rho = 0.9 (the paper's
figures take the best lambda of its grid {0.01, 0.03, 0.1, 0.3, 1} for each seed; 1 gives w = 0 in every
task, so it is left out here). The ``ridge`` study does the same for the baselines: the paper's code
sweeps the ridge weight over the same grid (the correlation study runs its default, 0.01).

Example:
    From a clone of the repository::

        metasparse bench disentangle --budget reduced --study correlation --shard 0/2   # and 1/2
        metasparse bench disentangle --budget paper --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from metasparse.experiments.disentangle import SweepGrid, run_sweep
from metasparse.train.bilevel import DisentangleConfig

__all__ = ["BUDGETS", "RESULTS_DIR", "STUDIES", "main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STUDIES = ("correlation", "support", "lambda", "seeds", "ridge")

BUDGETS: dict[str, dict[str, Any]] = {
    "paper": {"config": {"steps": 20_000, "validate_every": 1000, "val_tasks": 1000, "eval_samples": 0,
                         "ica_samples": 250_000},
              "correlation": SweepGrid(rhos=(0.0, 0.5, 0.8, 0.9, 0.95, 0.99), methods=("lasso", "ridge"),
                                       seeds=(0, 1, 2)),
              "support": SweepGrid(rhos=(0.9,), block_sizes=(2, 3, 6), methods=("lasso",), seeds=(0, 1, 2)),
              "lambda": SweepGrid(rhos=(0.9,), methods=("lasso",), lambda_ratios=(0.01, 0.03, 0.1),
                                  seeds=(0, 1, 2)),
              "ridge": SweepGrid(rhos=(0.9,), methods=("ridge",), ridge_ratios=(0.03, 0.1, 0.3, 1.0),
                                 seeds=(0, 1, 2))},
    "reduced": {"config": {"steps": 500, "validate_every": 100, "val_tasks": 64, "probe_samples": 2048,
                           "eval_samples": 20_000, "ica_samples": 20_000},
                "correlation": SweepGrid(rhos=(0.9,), methods=("lasso", "ridge"), seeds=(0,)),
                "support": SweepGrid(rhos=(0.9,), block_sizes=(2,), methods=("lasso",), seeds=(0,))},
    "long": {"config": {"steps": 20_000, "validate_every": 1000, "val_tasks": 256, "probe_samples": 2048,
                        "eval_samples": 20_000, "ica_samples": 20_000},
             "correlation": SweepGrid(rhos=(0.9,), methods=("lasso", "ridge"), seeds=(0,)),
             "support": SweepGrid(rhos=(0.9,), block_sizes=(2, 3), methods=("lasso",), seeds=(0,)),
             "seeds": SweepGrid(rhos=(0.9,), methods=("lasso",), seeds=(1,))},
    "medium": {"config": {"steps": 3000, "validate_every": 500, "val_tasks": 256, "probe_samples": 2048,
                          "eval_samples": 20_000, "ica_samples": 20_000},
               "correlation": SweepGrid(rhos=(0.0, 0.5, 0.8, 0.9, 0.95, 0.99), methods=("lasso", "ridge"),
                                        seeds=(0,)),
               "support": SweepGrid(rhos=(0.9,), block_sizes=(2, 3), methods=("lasso",), seeds=(0,)),
               "lambda": SweepGrid(rhos=(0.9,), methods=("lasso",), lambda_ratios=(0.1, 0.2, 0.5, 0.7),
                                   seeds=(0,)),
               "seeds": SweepGrid(rhos=(0.9,), methods=("lasso", "ridge"), seeds=(1, 2)),
               "ridge": SweepGrid(rhos=(0.9,), methods=("ridge",), ridge_ratios=(0.03, 0.1, 0.3, 1.0),
                                  seeds=(0,))},
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen studies at the chosen budget (resumable; finished runs are skipped).

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(prog="metasparse bench disentangle", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="reduced")
    parser.add_argument("--study", choices=STUDIES, nargs="+", default=None,
                        help="default: every study of the budget")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--data-path", default=None, help="DeepMind's 3dshapes.h5 (default: the renderer)")
    parser.add_argument("--shard", default=None, metavar="I/N", help="run every N-th run from the I-th")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/disentangle-BUDGET")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    budget = BUDGETS[args.budget]
    base = dataclasses.replace(DisentangleConfig(), device=args.device, data_path=args.data_path,
                               **budget["config"])
    out = args.out or RESULTS_DIR / f"disentangle-{args.budget}"
    studies = args.study or [study for study in STUDIES if study in budget]
    missing = [study for study in studies if study not in budget]
    if missing:
        parser.error(f"--study {' '.join(missing)}: not part of --budget {args.budget} (it has "
                     f"{', '.join(study for study in STUDIES if study in budget)})")
    for study in studies:
        records = run_sweep(base, budget[study], out / study, args.shard, progress=not args.no_progress)
        print(f"{study}: {len(records)} method records in {out / study / 'results.json'}")
        for record in records:
            print(f"  {record['run']:<45} {record['method']:<16} rho {record['rho']:<5g} "
                  f"realised {record['realised_correlation']:.3f}  MCC {record['mcc']:.3f}  "
                  f"R {record['r']:.3f}  train {record['train_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
