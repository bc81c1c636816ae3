"""The disentanglement study: one bilevel run or a sweep of independent resumable runs; results and plots.

``metasparse disentangle [FLAGS] --out DIR`` trains one encoder (`metasparse.train.bilevel`), reloads its
best checkpoint (validation outer loss), scores it (`metasparse.train.bilevel.evaluate_encoder`) and
writes ``DIR/results.json``, ``DIR/coordinates.png`` (each true factor against its matched learned
coordinate) and ``DIR/traversal.png`` (the learned coordinates while one factor at a time moves
through its grid values from an anchor image).

``metasparse disentangle score DIR [DIR ...] [--eval-samples N] [--out FILE]`` scores finished runs'
best checkpoints again, on all images by default (the paper's evaluation, for runs trained with a
sampled one), writes ``DIR/rescored.json`` (and all of them to ``FILE``) and prints each factor's matched
correlation (its share of MCC) and multiple correlation (its share of R).

``metasparse disentangle sweep [FLAGS] --out DIR`` runs the product of ``--rhos``, ``--jitters``,
``--block-sizes`` (``block`` mode; none: the base ``--mode``), ``--methods``, ``--lambda-ratios``
(lasso) / ``--ridge-ratios`` (ridge) and ``--seeds``, each run in ``DIR/runs/NAME``. Finished runs (a
``results.json``) are skipped and unfinished ones resumed, so a killed sweep is restarted with the same
command; ``--shard i/n`` runs every n-th run from the i-th, to split a sweep across machines sharing
``DIR``. The sweep then writes ``DIR/results.json`` (one record per finished run, with the method labels
``inner-lasso``, ``inner-ridge`` and ``inner-ridge+ICA``), ``DIR/correlation.png`` (MCC and R against
the correlation rho per method, mean ± std over seeds) and, when block sizes were swept,
``DIR/support_violation.png``.

Example:
    >>> from metasparse.cli import main
    >>> main(["disentangle", "--steps", "1000", "--out", "runs/lasso"])               # doctest: +SKIP
    >>> main(["disentangle", "sweep", "--rhos", "0", "0.9", "--methods", "lasso", "ridge",
    ...       "--seeds", "0", "1", "--out", "runs/sweep", "--shard", "0/2"])           # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metasparse._optional import require
from metasparse.atomic import write_atomically
from metasparse.metrics.disentanglement import correlation_matrix
from metasparse.models.encoders import Shapes3DEncoder
from metasparse.tasks.regression import FactorLatents, support_variability
from metasparse.train.bilevel import (
    METHODS,
    BilevelTrainer,
    DisentangleConfig,
    encode,
    evaluate_encoder,
    make_latents,
)
from metasparse.train.config import add_config_arguments, config_from_args
from metasparse.train.run import load_checkpoint, read_metrics, resolve_device, run_training

__all__ = [
    "METHOD_LABELS",
    "RESCORED_FILE",
    "RESULTS_FILE",
    "SweepGrid",
    "add_arguments",
    "collect_records",
    "plot_coordinates",
    "plot_correlation",
    "plot_support_violation",
    "plot_traversal",
    "plot_validation",
    "run",
    "run_name",
    "run_one",
    "run_sweep",
    "score_run",
    "shard_of",
]

RESULTS_FILE = "results.json"
RESCORED_FILE = "rescored.json"
METHOD_LABELS = ("inner-lasso", "inner-ridge", "inner-ridge+ICA")
#: The anchor of the traversal figure: factor indices (the middle of each factor's grid, a cube).
TRAVERSAL_ANCHOR = (5, 5, 5, 4, 0, 7)
#: Uniform images in the coordinates figure (at most the evaluation's number).
FIGURE_POINTS = 5000


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=1, sort_keys=True) + "\n"
    write_atomically(path, lambda temporary: temporary.write_text(text))


def run_one(config: DisentangleConfig, out_dir: str | Path, latents: FactorLatents | None = None,
            progress: bool = True, plots: bool = True) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one run in ``out_dir``, score its best checkpoint.

    Args:
        config: The run's settings.
        out_dir: Its directory (`metasparse.train.run_training`'s files plus ``results.json``).
        latents: Shared latents built with ``config``'s distribution, rho and jitter (optional).
        progress: Show the tqdm bar.
        plots: Also write ``coordinates.png`` and ``traversal.png``.

    Returns:
        The ``results.json`` document: ``config``, ``scores`` (`evaluate_encoder`), ``best_validation``,
        ``realised_correlation``, ``effective_images``, ``support_variability``, ``train_seconds`` (sum of
        the logged step times, across resumes) and ``eval_seconds``.
    """
    out_dir = Path(out_dir)
    results_path = out_dir / RESULTS_FILE
    if results_path.is_file():
        return json.loads(results_path.read_text())
    trainer = BilevelTrainer(config, latents)
    options = config.run_options(out_dir, resume=True, progress=progress)
    summary = run_training(trainer, config.to_dict(), options)
    best = load_checkpoint(out_dir / "best.pt")
    trainer.load_state_dict(best["trainer"])
    started = time.perf_counter()
    scores = evaluate_encoder(trainer.encoder, trainer.latents, config, trainer.device)
    eval_seconds = time.perf_counter() - started
    if plots:
        total = len(trainer.latents.latents)
        count = min(FIGURE_POINTS, config.eval_samples or total, total)
        figure_indices = np.random.default_rng([config.seed, 3]).choice(total, count, replace=False)
        learned = encode(trainer.encoder, trainer.latents, figure_indices, trainer.device)
        true = trainer.latents.latents.numpy()[figure_indices]
        write_atomically(out_dir / "coordinates.png",
                         lambda temporary: plot_coordinates(true, learned, temporary, title=out_dir.name))
        write_atomically(out_dir / "traversal.png",
                         lambda temporary: plot_traversal(trainer.encoder, trainer.latents, temporary,
                                                          device=trainer.device, title=out_dir.name))
    steps = [record for record in read_metrics(out_dir) if record["split"] == "train"]
    results = {"config": config.to_dict(), "scores": scores, "best_validation": summary["best"],
               "realised_correlation": trainer.latents.realised_correlation(),
               "effective_images": trainer.latents.effective_count(),
               "support_variability": support_variability(config.task_config(), config.z_dim),
               "train_seconds": float(sum(record["time_step"] for record in steps)),
               "eval_seconds": eval_seconds, "torch_threads": torch.get_num_threads()}
    _write_json(results_path, results)
    return results


def score_run(run_dir: str | Path, eval_samples: int = 0, latents: FactorLatents | None = None,
              device: str | None = None) -> dict[str, Any]:
    """Score a finished run's best checkpoint again (`evaluate_encoder`) and write ``rescored.json``.

    Args:
        run_dir: A directory `run_one` finished (its ``results.json`` holds the config).
        eval_samples: Evaluation images: 0 (default) for all of them, the paper's setting.
        latents: Shared latents built with the run's distribution, rho and jitter (optional).
        device: Where the encoder runs (default: the run's device).

    Returns:
        ``{"run", "run_dir", "eval_samples", "scores"}``, as written.

    Raises:
        ValueError: If ``run_dir`` is not a finished run.

    Example:
        >>> score_run("runs/sweep/runs/lasso-rho0.9-jit1-bernoulli-lam0.3-s0")["scores"]["mcc"]
        ... # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    config = dataclasses.replace(_finished_run_config(run_dir), eval_samples=eval_samples,
                                 **({} if device is None else {"device": device}))
    target = resolve_device(config.device)
    latents = make_latents(config, target) if latents is None else latents
    encoder = Shapes3DEncoder(z_dim=config.z_dim).to(target)
    encoder.load_state_dict(load_checkpoint(run_dir / "best.pt", target)["trainer"]["encoder"])
    rescored = {"run": run_dir.name, "run_dir": str(run_dir), "eval_samples": eval_samples,
                "scores": evaluate_encoder(encoder, latents, config, target)}
    _write_json(run_dir / RESCORED_FILE, rescored)
    return rescored


def _finished_run_config(run_dir: Path) -> DisentangleConfig:
    """The config of the run `run_one` finished in ``run_dir``; a ValueError for anything else."""
    results_path = run_dir / RESULTS_FILE
    results = json.loads(results_path.read_text()) if results_path.is_file() else None
    if not isinstance(results, dict) or "config" not in results or not (run_dir / "best.pt").is_file():
        raise ValueError(f"{run_dir} is not a finished run (a {RESULTS_FILE} with its config and a best.pt)")
    return DisentangleConfig(**results["config"])


def _format_factors(rescored: dict[str, Any]) -> str:
    from metasparse.data import FACTOR_NAMES

    scores = rescored["scores"]
    names = (FACTOR_NAMES if len(scores["r_per_factor"]) == len(FACTOR_NAMES)
             else [f"factor {index}" for index in range(len(scores["r_per_factor"]))])
    lines = [f"{rescored['run']} on {scores['eval_images']} images: MCC {scores['mcc']:.3f}, "
             f"R {scores['r']:.3f}, after ICA MCC {scores['mcc_ica']:.3f}",
             "| factor | matched correlation | multiple correlation |", "|---|---|---|"]
    for name, matched, multiple in zip(names, scores["mcc_per_factor"], scores["r_per_factor"], strict=True):
        lines.append(f"| {name} | {'-' if matched is None else f'{matched:.3f}'} | {multiple:.3f} |")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SweepGrid:
    """The axes of a sweep; each run is one point of their product on top of a base config.

    Example:
        >>> grid = SweepGrid(rhos=(0.0, 0.9), methods=("lasso", "ridge"), seeds=(0,))
        >>> [run_name(c) for c in grid.configs(DisentangleConfig())][:2]
        ['lasso-rho0-jit1-bernoulli-lam0.3-s0', 'ridge-rho0-jit1-bernoulli-lam0.01-s0']
    """

    rhos: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
    jitters: tuple[float, ...] | None = None
    block_sizes: tuple[int, ...] | None = None
    methods: tuple[str, ...] = METHODS
    lambda_ratios: tuple[float, ...] | None = None
    ridge_ratios: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)

    def configs(self, base: DisentangleConfig) -> list[DisentangleConfig]:
        """Every run's config, in a fixed order (the order `shard_of` splits)."""
        for method in self.methods:
            if method not in METHODS:
                raise ValueError(f"methods must be in {METHODS}, got {method!r}")
        configs = []
        jitters = self.jitters or (base.jitter,)
        blocks: Sequence[int | None] = self.block_sizes or (None,)
        for block, jitter, rho, method, seed in itertools.product(blocks, jitters, self.rhos, self.methods,
                                                                  self.seeds):
            ratios = ((self.lambda_ratios or (base.lambda_ratio,)) if method == "lasso"
                      else (self.ridge_ratios or (base.ridge_ratio,)))
            for ratio in ratios:
                changes: dict[str, Any] = {"rho": rho, "jitter": jitter, "method": method, "seed": seed,
                                           "lambda_ratio" if method == "lasso" else "ridge_ratio": ratio}
                if block is not None:
                    changes.update(mode="block", block_size=block)
                configs.append(dataclasses.replace(base, **changes))
        return configs


def run_name(config: DisentangleConfig) -> str:
    """The directory name of a run within a sweep: its swept settings."""
    ratio = config.lambda_ratio if config.method == "lasso" else config.ridge_ratio
    mode = f"block{config.block_size}" if config.mode == "block" else config.mode
    return f"{config.method}-rho{config.rho:g}-jit{config.jitter:g}-{mode}-lam{ratio:g}-s{config.seed}"


def shard_of(items: Sequence[Any], shard: str | None) -> list[Any]:
    """The items of shard ``"i/n"``: every n-th from the i-th (all of them for ``None``).

    Example:
        >>> shard_of(list(range(7)), "1/3")
        [1, 4]
    """
    if shard is None:
        return list(items)
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be i/n with integers, got {shard!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {shard!r}")
    return list(items)[index::count]


def method_records(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat records of one run's results: one per method label (a ridge run gives ridge and ridge+ICA)."""
    config, scores = results["config"], results["scores"]
    common = {key: config[key] for key in ("rho", "jitter", "mode", "block_size", "seed", "lambda_ratio",
                                           "ridge_ratio", "steps")}
    common.update(realised_correlation=results["realised_correlation"],
                  train_seconds=results["train_seconds"])
    plain = {name: value for name, value in scores.items() if not name.endswith("_ica")}
    if config["method"] == "lasso":
        return [{"method": "inner-lasso", **common, **plain}]
    ica = {name[:-4]: value for name, value in scores.items() if name.endswith("_ica")}
    ica.update(eval_images=scores["eval_images"], ica_converged=scores["ica_converged"])
    return [{"method": "inner-ridge", **common, **plain}, {"method": "inner-ridge+ICA", **common, **ica}]


def collect_records(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Records (`method_records`) of every finished run under ``runs_dir``, sorted by run name."""
    records = []
    for path in sorted(Path(runs_dir).glob(f"*/{RESULTS_FILE}")):
        for record in method_records(json.loads(path.read_text())):
            records.append({"run": path.parent.name, **record})
    return records


def _shared_latents(config: DisentangleConfig, device: str, cache: dict[tuple[Any, ...], FactorLatents]
                    ) -> FactorLatents:
    """``config``'s latents on ``device``, from ``cache`` when the last ones built match (one set of
    latents in memory at a time)."""
    key = (config.data_path, config.distribution, config.rho, config.jitter, device)
    if key not in cache:
        cache.clear()
        cache[key] = make_latents(config, resolve_device(device))
    return cache[key]


def run_sweep(base: DisentangleConfig, grid: SweepGrid, out_dir: str | Path, shard: str | None = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Run (or resume, or skip) this shard's runs of the sweep, then write the sweep's results and plots.

    Returns:
        The records of every finished run of the whole sweep (`collect_records`).
    """
    out_dir = Path(out_dir)
    runs = shard_of(grid.configs(base), shard)
    shared: dict[tuple[Any, ...], FactorLatents] = {}
    for number, config in enumerate(runs, start=1):
        run_dir = out_dir / "runs" / run_name(config)
        if (run_dir / RESULTS_FILE).is_file():
            continue
        print(f"metasparse disentangle sweep: run {number}/{len(runs)}: {run_dir.name}", flush=True)
        run_one(config, run_dir, _shared_latents(config, config.device, shared), progress=progress)
    records = collect_records(out_dir / "runs")
    _write_json(out_dir / RESULTS_FILE, records)
    write_atomically(out_dir / "validation.png", lambda temporary: plot_validation(out_dir / "runs",
                                                                                   temporary))
    if records:
        write_atomically(out_dir / "correlation.png", lambda temporary: plot_correlation(records, temporary))
        if grid.block_sizes:
            write_atomically(out_dir / "support_violation.png",
                             lambda temporary: plot_support_violation(records, temporary))
    return records


def _mean_std(records: list[dict[str, Any]], metric: str) -> tuple[float, float]:
    values = np.array([record[metric] for record in records], dtype=float)
    return float(values.mean()), float(values.std())


_COLOURS = {"inner-lasso": "tab:blue", "inner-ridge": "tab:orange", "inner-ridge+ICA": "tab:green"}


def plot_correlation(records: list[dict[str, Any]], path: str | Path) -> None:
    """MCC and R (mean ± std over seeds and other axes) against rho, one line per method.

    Example:
        >>> plot_correlation(collect_records("runs/sweep/runs"), "correlation.png")   # doctest: +SKIP
    """
    figure_module = require("matplotlib.figure")
    figure = figure_module.Figure(figsize=(9, 3.8), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, metric in zip(axes, ("mcc", "r"), strict=True):
        for method in METHOD_LABELS:
            mine = [record for record in records if record["method"] == method]
            rhos = sorted({record["rho"] for record in mine})
            if not rhos:
                continue
            stats = [_mean_std([r for r in mine if r["rho"] == rho], metric) for rho in rhos]
            ax.errorbar(rhos, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3,
                        color=_COLOURS[method], label=method)
        ax.set_xlabel("correlation rho of the Gaussian reweighting")
        ax.set_ylabel(metric.upper())
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    seeds = len({record["seed"] for record in records})
    figure.suptitle(f"3D Shapes disentanglement: mean ± std over {seeds} seed(s)", fontsize=10)
    figure.savefig(path, dpi=120, format="png")


def plot_validation(runs_dir: str | Path, path: str | Path) -> None:
    """Validation MCC, R and outer loss against the training step, one line per run under ``runs_dir``.

    The MCC and R are the validation probe's (``probe_samples`` fixed uniform images), so the curves show
    how disentanglement grows during training, finished runs and runs still going alike.

    Example:
        >>> plot_validation("runs/sweep/runs", "validation.png")   # doctest: +SKIP
    """
    figure_module = require("matplotlib.figure")
    figure = figure_module.Figure(figsize=(12, 3.6), layout="constrained")
    axes = figure.subplots(1, 3)
    for run_dir in sorted(path.parent for path in Path(runs_dir).glob("*/metrics.jsonl")):
        records = [r for r in read_metrics(run_dir) if r["split"] == "validation" and "mcc" in r]
        steps = [r["step"] for r in records]
        for ax, metric in zip(axes, ("mcc", "r", "loss"), strict=True):
            ax.plot(steps, [r[metric] for r in records], marker="o", markersize=3, label=run_dir.name)
    for ax, label in zip(axes, ("probe MCC", "probe R", "validation outer loss"), strict=True):
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.savefig(path, dpi=120, format="png")


def plot_support_violation(records: list[dict[str, Any]], path: str | Path) -> Any:
    """MCC and R bars per block size (block mode) and method: support violation for blocks 2 and 3.

    Only the methods that were run on block supports get bars (and a legend entry), centred on their
    block's tick.

    Returns:
        The matplotlib ``Figure`` written to ``path``.
    """
    figure_module = require("matplotlib.figure")
    block_records = [record for record in records if record["mode"] == "block"]
    blocks = sorted({record["block_size"] for record in block_records})
    methods = [method for method in METHOD_LABELS if any(r["method"] == method for r in block_records)]
    figure = figure_module.Figure(figsize=(9, 3.8), layout="constrained")
    axes = figure.subplots(1, 2)
    width = 0.8 / max(len(methods), 1)
    for ax, metric in zip(axes, ("mcc", "r"), strict=True):
        for offset, method in enumerate(methods):
            stats = []
            for block in blocks:
                mine = [r for r in block_records if r["block_size"] == block and r["method"] == method]
                stats.append(_mean_std(mine, metric) if mine else (np.nan, 0.0))
            ax.bar(np.arange(len(blocks)) + (offset - (len(methods) - 1) / 2) * width, [s[0] for s in stats],
                   width, yerr=[s[1] for s in stats], color=_COLOURS[method], label=method, capsize=3)
        ax.set_xticks(np.arange(len(blocks)), [f"block size {b}" for b in blocks])
        ax.set_ylabel(metric.upper())
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    figure.suptitle("Support violation: blocks of 2 or 3 factors break the identifiability assumption",
                    fontsize=10)
    figure.savefig(path, dpi=120, format="png")
    return figure


def plot_coordinates(true: np.ndarray, learned: np.ndarray, path: str | Path, title: str = "") -> None:
    """Each true factor against the learned coordinate matched to it (Hungarian on |Pearson|)."""
    optimize = require("scipy.optimize")
    figure_module = require("matplotlib.figure")
    from metasparse.data import FACTOR_NAMES

    correlation = correlation_matrix(true, learned)
    rows, columns = optimize.linear_sum_assignment(np.abs(correlation), maximize=True)
    figure = figure_module.Figure(figsize=(2.6 * len(rows), 2.8), layout="constrained")
    axes = figure.subplots(1, len(rows), squeeze=False)[0]
    for ax, row, column in zip(axes, rows, columns, strict=True):
        ax.scatter(true[:, row], learned[:, column], s=2, alpha=0.3)
        name = FACTOR_NAMES[row] if true.shape[1] == len(FACTOR_NAMES) else f"factor {row}"
        ax.set_title(f"{name}: |r| = {abs(correlation[row, column]):.3f}", fontsize=8)
        ax.set_xlabel("true (standardised)", fontsize=8)
        ax.set_ylabel(f"learned coordinate {column}", fontsize=8)
    figure.suptitle(f"Learned vs true coordinates {title}", fontsize=10)
    figure.savefig(path, dpi=110, format="png")


def plot_traversal(encoder: torch.nn.Module, latents: FactorLatents, path: str | Path,
                   anchor: Sequence[int] = TRAVERSAL_ANCHOR, device: torch.device | str = "cpu",
                   title: str = "") -> None:
    """Latent traversal: from the anchor image (factor indices), each factor in turn moves through all its
    values; the learned coordinates are plotted above the traversed images."""
    figure_module = require("matplotlib.figure")
    from metasparse.data import FACTOR_NAMES, FACTOR_SIZES, factor_indices_to_flat

    figure = figure_module.Figure(figsize=(3.0 * len(FACTOR_SIZES), 4.6), layout="constrained")
    grid = figure.subplots(2, len(FACTOR_SIZES), height_ratios=(3, 1))
    for factor, (ax, strip) in enumerate(zip(grid[0], grid[1], strict=True)):
        indices = torch.tensor(anchor).repeat(FACTOR_SIZES[factor], 1)
        indices[:, factor] = torch.arange(FACTOR_SIZES[factor])
        flat = factor_indices_to_flat(indices).numpy()
        learned = encode(encoder, latents, flat, device)
        for coordinate in range(learned.shape[1]):
            ax.plot(range(len(flat)), learned[:, coordinate], marker=".", label=f"z{coordinate}")
        ax.set_title(FACTOR_NAMES[factor], fontsize=9)
        ax.set_xlabel("factor value index", fontsize=8)
        images = latents.dataset.images(torch.from_numpy(flat[:: max(1, len(flat) // 5)])).cpu()
        strip.imshow(torch.cat(list(images), dim=1).numpy())
        strip.axis("off")
    grid[0][0].set_ylabel("learned coordinate")
    grid[0][-1].legend(fontsize=7)
    figure.suptitle(f"Latent traversal from factor indices {tuple(anchor)} {title}", fontsize=10)
    figure.savefig(path, dpi=100, format="png")


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SweepGrid()
    parser.add_argument("--rhos", type=float, nargs="+", default=list(defaults.rhos), help="correlations rho")
    parser.add_argument("--jitters", type=float, nargs="+", default=None,
                        help="factor jitters (default: --jitter)")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=None,
                        help="block sizes of block-mode tasks (default: --mode's tasks)")
    parser.add_argument("--methods", nargs="+", default=list(defaults.methods), choices=METHODS)
    parser.add_argument("--lambda-ratios", type=float, nargs="+", default=None,
                        help="lasso lambda / lambda_max values (default: --lambda-ratio)")
    parser.add_argument("--ridge-ratios", type=float, nargs="+", default=None,
                        help="ridge ratios (default: --ridge-ratio)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    parser.add_argument("--shard", default=None, metavar="I/N", help="run every N-th run from the I-th")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``metasparse disentangle`` (one run) and its ``sweep`` subcommand to ``parser``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> args = parser.parse_args(["sweep", "--rhos", "0", "0.9", "--out", "d", "--steps", "10"])
        >>> args.action, args.rhos, args.steps
        ('sweep', [0.0, 0.9], 10)
    """
    add_config_arguments(parser, DisentangleConfig)
    parser.add_argument("--out", type=Path, required=False, default=None, metavar="DIR", help="run directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    sweep = actions.add_parser("sweep", help="a sweep of independent, resumable runs")
    add_config_arguments(sweep, DisentangleConfig)
    sweep.add_argument("--out", type=Path, required=True, metavar="DIR", help="sweep directory")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bars")
    _sweep_arguments(sweep)
    score = actions.add_parser("score", help="score finished runs' best checkpoints again, per factor")
    score.add_argument("runs", type=Path, nargs="+", metavar="DIR", help="finished run directories")
    score.add_argument("--eval-samples", type=int, default=0,
                       help="evaluation images: 0 (default) for all of them, else a uniform sample")
    score.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: the run's)")
    score.add_argument("--out", type=Path, default=None, metavar="FILE",
                       help="also write every run's rescored document, as one JSON list, to FILE")


def _format_records(records: list[dict[str, Any]]) -> str:
    lines = ["| run | method | rho | realised | MCC | R | DCI-D | DCI-C |", "|---" * 8 + "|"]
    for record in records:
        lines.append(f"| {record['run']} | {record['method']} | {record['rho']:g} | "
                     f"{record['realised_correlation']:.3f} | {record['mcc']:.3f} | {record['r']:.3f} | "
                     f"{record['dci_d']:.3f} | {record['dci_c']:.3f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``metasparse disentangle`` (one run) or ``metasparse disentangle sweep`` from parsed arguments.

    Raises:
        SystemExit: With the option named, for invalid options.
    """
    if args.action == "score":
        return _score(args)
    try:
        base = config_from_args(DisentangleConfig, args)
        if args.out is None:
            raise ValueError("--out DIR is required")
        if args.action == "sweep":
            grid = SweepGrid(rhos=tuple(args.rhos), methods=tuple(args.methods), seeds=tuple(args.seeds),
                             jitters=None if args.jitters is None else tuple(args.jitters),
                             block_sizes=None if args.block_sizes is None else tuple(args.block_sizes),
                             lambda_ratios=None if args.lambda_ratios is None else tuple(args.lambda_ratios),
                             ridge_ratios=None if args.ridge_ratios is None else tuple(args.ridge_ratios))
            grid.configs(base)
            shard_of([], args.shard)
    except ValueError as error:
        raise SystemExit(f"metasparse disentangle: {error}") from error
    if args.action == "sweep":
        records = run_sweep(base, grid, args.out, args.shard, progress=not args.no_progress)
        print(_format_records(records))
        print(f"wrote {args.out / RESULTS_FILE}")
        return 0
    results = run_one(base, args.out, progress=not args.no_progress)
    print(_format_records([{"run": args.out.name, **record} for record in method_records(results)]))
    print(f"train {results['train_seconds']:.0f} s, evaluation {results['eval_seconds']:.0f} s; "
          f"wrote {args.out / RESULTS_FILE}")
    return 0


def _score(args: argparse.Namespace) -> int:
    try:  # the runs and --eval-samples (through the config's own check) before any work
        configs = [dataclasses.replace(_finished_run_config(run_dir), eval_samples=args.eval_samples)
                   for run_dir in args.runs]
    except ValueError as error:
        raise SystemExit(f"metasparse disentangle score: {error}") from error
    shared: dict[tuple[Any, ...], FactorLatents] = {}
    documents = []
    for run_dir, config in zip(args.runs, configs, strict=True):
        latents = _shared_latents(config, args.device or config.device, shared)
        documents.append(score_run(run_dir, args.eval_samples, latents, args.device))
        print(_format_factors(documents[-1]))
        print(f"wrote {run_dir / RESCORED_FILE}", flush=True)
    if args.out is not None:
        _write_json(args.out, documents)
        print(f"wrote {args.out}")
    return 0
