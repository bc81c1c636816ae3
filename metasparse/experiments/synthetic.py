"""The synthetic generalisation experiment: disentangled + sparse vs entangled, lasso vs ridge.

For each task sparsity ``l / m`` and seed, one sparse linear task is drawn
(`metasparse.tasks.sparse_linear.make_sparse_linear_task`), with one pool of training samples and
one large test set. Lasso, ridge and least squares are fitted on the first ``n`` training samples, seen
through the disentangled representation (the true factors) and through an entangled one (the factors
rotated by a random orthogonal matrix), and scored by test R^2. Every predictor and both representations
see the same task and the same samples within a seed, so the comparisons are paired; the seeds give the
spread.

Regularisation is chosen on the training samples only: ``LassoCV`` with its default path of 100 values
and ``min(5, n)``-fold cross-validation, ``RidgeCV`` by efficient leave-one-out over
`RIDGE_ALPHAS`. Least squares is ``LinearRegression``, the minimum-norm interpolant when the
centred design has fewer rows than columns.

Example:
    >>> config = SyntheticConfig.quick()
    >>> records = run_experiment(config, progress=False)  # doctest: +SKIP
    >>> print(format_table(records))                      # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from metasparse._optional import require
from metasparse.atomic import replace_directory_atomically
from metasparse.tasks.sparse_linear import REPRESENTATIONS, Representation, make_sparse_linear_task, n_nonzero

__all__ = [
    "PREDICTORS",
    "RIDGE_ALPHAS",
    "Predictor",
    "SyntheticConfig",
    "add_arguments",
    "check_output_directory",
    "config_from_args",
    "format_table",
    "make_predictor",
    "plot_results",
    "run",
    "run_experiment",
    "score_seed",
    "seed_rng",
    "summarise",
    "write_results",
]

Predictor = Literal["lasso", "ridge", "least_squares"]
PREDICTORS: tuple[Predictor, ...] = ("lasso", "ridge", "least_squares")

#: Ridge penalties searched by leave-one-out: 1e-6 (interpolation) to 1e6 (predicts the mean), 4 a decade.
RIDGE_ALPHAS = np.logspace(-6, 6, 49)
LASSO_MAX_FOLDS = 5
LASSO_MAX_ITER = 10_000

#: The y-range of the figure; points outside it are listed in the panel.
Y_LIMITS = (-0.5, 1.05)
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"
FIGURE_FILE = "synthetic.png"
_RESULT_FILES = (RESULTS_FILE, CONFIG_FILE, FIGURE_FILE)

# (sparsity, n, representation, predictor) -> one test R^2 per seed
Scores = dict[tuple[float, int, Representation, Predictor], list[float]]


@dataclass(frozen=True)
class SyntheticConfig:
    """What to run. The default m, sparsities and n follow the paper as far as its artefacts show; the
    number of seeds, the test-set size and the noise level are this package's choices.

    Attributes:
        m: Number of latent factors (the representation's dimension).
        sparsities: Task sparsities ``l / m``, each in (0, 1]; one figure panel each.
        n_train: Training-set sizes, each at least 2.
        seeds: Number of seeds (tasks) per sparsity, at least 2 so that a standard error exists.
        n_test: Test samples per task.
        noise: Noise-to-signal ratio of standard deviations (see `metasparse.tasks.sparse_linear`).

    Example:
        >>> SyntheticConfig(m=50, sparsities=(0.1,), n_train=(20, 40), seeds=3).n_train
        (20, 40)
    """

    m: int = 100
    sparsities: tuple[float, ...] = (0.05, 0.2, 0.8)
    n_train: tuple[int, ...] = (25, 50, 75, 100, 125, 150)
    seeds: int = 20
    n_test: int = 10_000
    noise: float = 0.1

    def __post_init__(self) -> None:
        _check(self.m >= 1, f"m (--m) must be at least 1, got {self.m}")
        _check(len(self.sparsities) > 0, "sparsities (--sparsities) must not be empty")
        for sparsity in self.sparsities:
            _check(0.0 < sparsity <= 1.0, f"sparsities (--sparsities) must be in (0, 1], got {sparsity}")
            try:
                n_nonzero(self.m, sparsity)
            except ValueError as error:
                raise ValueError(f"sparsities (--sparsities) and m (--m): {error}") from None
        _check(len(set(self.sparsities)) == len(self.sparsities),
               f"sparsities (--sparsities) must not repeat, got {list(self.sparsities)}")
        _check(len(self.n_train) > 0, "n_train (--n-train) must not be empty")
        _check(min(self.n_train, default=2) >= 2,
               f"n_train (--n-train) values must be at least 2, got {list(self.n_train)}")
        _check(len(set(self.n_train)) == len(self.n_train),
               f"n_train (--n-train) must not repeat, got {list(self.n_train)}")
        _check(self.seeds >= 2, f"seeds (--seeds) must be at least 2 for a standard error, got {self.seeds}")
        _check(self.n_test >= 2, f"n_test (--n-test) must be at least 2, got {self.n_test}")
        _check(self.noise >= 0.0, f"noise (--noise) must be non-negative, got {self.noise}")

    @classmethod
    def quick(cls) -> SyntheticConfig:
        """A configuration that runs in a second or two, for smoke tests.

        Example:
            >>> SyntheticConfig.quick().m
            20
        """
        return cls(m=20, sparsities=(0.05, 0.2, 0.8), n_train=(10, 20, 40), seeds=2, n_test=500)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def make_predictor(predictor: Predictor, n: int) -> Any:
    """An unfitted scikit-learn regressor whose regularisation is chosen on the ``n`` training samples.

    Args:
        predictor: ``"lasso"``, ``"ridge"`` or ``"least_squares"``.
        n: Number of training samples it will be fitted on (caps the number of lasso CV folds).

    Returns:
        ``LassoCV``, ``RidgeCV`` (leave-one-out over `RIDGE_ALPHAS`) or ``LinearRegression``.

    Raises:
        ValueError: For an unknown predictor.

    Example:
        >>> make_predictor("lasso", n=25)  # doctest: +SKIP
        LassoCV(cv=5, max_iter=10000)
    """
    linear_model = require("sklearn.linear_model")
    if predictor == "lasso":
        return linear_model.LassoCV(cv=min(LASSO_MAX_FOLDS, n), max_iter=LASSO_MAX_ITER)
    if predictor == "ridge":
        return linear_model.RidgeCV(alphas=RIDGE_ALPHAS)
    if predictor == "least_squares":
        return linear_model.LinearRegression()
    raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")


def seed_rng(seed: int, sparsity: float) -> np.random.Generator:
    """The generator of one (seed, sparsity) cell: independent of the other cells and of the run's order.

    Example:
        >>> bool(seed_rng(0, 0.05).random() == seed_rng(0, 0.05).random() != seed_rng(0, 0.2).random())
        True
    """
    return np.random.default_rng([seed, round(sparsity * 1_000_000)])


def score_seed(config: SyntheticConfig, sparsity: float, seed: int) -> dict[tuple[int, Representation,
                                                                                 Predictor], float]:
    """Test R^2 of every (n, representation, predictor) on one task.

    The task, the training pool (the first ``n`` samples are used for each ``n``) and the test set are
    shared by all predictors and both representations.

    Args:
        config: Sizes and noise level.
        sparsity: The task's ``l / m``.
        seed: Seed index; with ``sparsity`` it fixes every random draw.

    Returns:
        ``{(n, representation, predictor): test R^2}``.

    Example:
        >>> scores = score_seed(SyntheticConfig.quick(), sparsity=0.2, seed=0)  # doctest: +SKIP
        >>> scores[(40, "disentangled", "lasso")]                               # doctest: +SKIP
        0.97...
    """
    r2_score = require("sklearn.metrics").r2_score
    rng = seed_rng(seed, sparsity)
    task = make_sparse_linear_task(config.m, sparsity, config.noise, rng)
    train_latents, train_targets = task.sample(max(config.n_train), rng)
    test_latents, test_targets = task.sample(config.n_test, rng)
    scores = {}
    for representation in REPRESENTATIONS:
        train_features = task.represent(train_latents, representation)
        test_features = task.represent(test_latents, representation)
        for n in config.n_train:
            for predictor in PREDICTORS:
                model = make_predictor(predictor, n).fit(train_features[:n], train_targets[:n])
                scores[(n, representation, predictor)] = float(r2_score(test_targets,
                                                                        model.predict(test_features)))
    return scores


def run_experiment(config: SyntheticConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Run every (sparsity, seed) and summarise over seeds.

    Args:
        config: What to run.
        progress: Show a tqdm bar over the (sparsity, seed) cells.

    Returns:
        Records as described in `summarise`.

    Example:
        >>> records = run_experiment(SyntheticConfig.quick(), progress=False)  # doctest: +SKIP
        >>> sorted(records[0])                                                  # doctest: +SKIP
        ['n', 'predictor', 'r2_mean', 'r2_sem', 'representation', 'sparsity']
    """
    scores: Scores = {}
    cells = [(sparsity, seed) for sparsity in config.sparsities for seed in range(config.seeds)]
    for sparsity, seed in tqdm(cells, desc="synthetic", unit="task", disable=not progress):
        for (n, representation, predictor), r2 in score_seed(config, sparsity, seed).items():
            scores.setdefault((sparsity, n, representation, predictor), []).append(r2)
    return summarise(scores)


def summarise(scores: Scores) -> list[dict[str, Any]]:
    """Mean and standard error of the mean over seeds, one record per configuration.

    Args:
        scores: ``{(sparsity, n, representation, predictor): [R^2 per seed]}``, at least two seeds each.

    Returns:
        ``[{"sparsity", "n", "representation", "predictor", "r2_mean", "r2_sem"}]`` in the order of
        ``scores``; ``r2_sem`` is the sample standard deviation (ddof=1) over the square root of the seeds.

    Example:
        >>> record = summarise({(0.05, 25, "disentangled", "lasso"): [0.9, 1.0]})[0]
        >>> round(record["r2_mean"], 6), round(record["r2_sem"], 6)
        (0.95, 0.05)
    """
    records = []
    for (sparsity, n, representation, predictor), values in scores.items():
        r2 = np.asarray(values)
        records.append({"sparsity": sparsity, "n": n, "representation": representation,
                        "predictor": predictor, "r2_mean": float(r2.mean()),
                        "r2_sem": float(r2.std(ddof=1) / np.sqrt(r2.size))})
    return records


def check_output_directory(out_dir: str | Path) -> Path:
    """Check, before an experiment runs, that `write_results` can write into ``out_dir``.

    ``out_dir`` is replaced as a whole, so it must be missing, or a directory holding only the result
    files (`RESULTS_FILE`, `CONFIG_FILE`, `FIGURE_FILE`); the nearest existing folder above it must let
    this process create a directory (tried, then removed).

    Raises:
        ValueError: Saying what is wrong with ``out_dir``.

    Example:
        >>> check_output_directory(tempfile.mkdtemp()).is_dir()
        True
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"{out_dir} exists and is not a directory")
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in _RESULT_FILES)
        if foreign:
            raise ValueError(f"{out_dir} holds files other than {', '.join(_RESULT_FILES)} "
                             f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); the results "
                             "replace the whole directory: choose a new or empty one")
    ancestor = out_dir.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot create {out_dir}: {ancestor} is not a directory")
    try:
        Path(tempfile.mkdtemp(prefix=".metasparse-probe-", dir=ancestor)).rmdir()
    except OSError as error:
        raise ValueError(f"cannot write into {ancestor} (for {out_dir}): {error.strerror or error}") from None
    return out_dir


def write_results(records: list[dict[str, Any]], config: SyntheticConfig, out_dir: str | Path) -> list[Path]:
    """Write the figure, ``config.json`` and ``results.json`` (the records) into ``out_dir``, as one set.

    The three files are written into a new directory that then replaces ``out_dir`` in one step
    (`metasparse.atomic.replace_directory_atomically`): ``out_dir`` holds the previous set or the new one,
    never a mix, and a failed or killed write leaves the previous set and no temporary behind.

    Args:
        records: From `run_experiment`.
        config: The configuration that produced them.
        out_dir: Created if missing; see `check_output_directory`.

    Returns:
        The paths written: results, config, figure.

    Raises:
        ValueError: From `check_output_directory`.

    Example:
        >>> write_results(records, config, "runs/synthetic")  # doctest: +SKIP
    """
    out_dir = check_output_directory(out_dir)

    def write(directory: Path) -> None:
        plot_results(records, config, directory / FIGURE_FILE)
        for name, document in ((CONFIG_FILE, dataclasses.asdict(config)), (RESULTS_FILE, records)):
            (directory / name).write_text(json.dumps(document, indent=1) + "\n")

    replace_directory_atomically(out_dir, write)
    return [out_dir / RESULTS_FILE, out_dir / CONFIG_FILE, out_dir / FIGURE_FILE]


def _curve(records: Iterable[dict[str, Any]], sparsity: float, representation: str,
           predictor: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = sorted((r["n"], r["r2_mean"], r["r2_sem"]) for r in records if r["sparsity"] == sparsity
                  and r["representation"] == representation and r["predictor"] == predictor)
    n, mean, sem = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
    return n, mean, sem


_COLOURS = {"lasso": "tab:blue", "ridge": "tab:orange", "least_squares": "tab:green"}
# Disentangled thick and pale, entangled thin and dashed on top: where the two coincide (ridge and least
# squares are rotation invariant) both stay visible.
_LINE_STYLES: dict[str, dict[str, Any]] = {
    "disentangled": {"linestyle": "-", "linewidth": 2.6, "marker": "o", "markersize": 6, "alpha": 0.55},
    "entangled": {"linestyle": "--", "linewidth": 1.3, "marker": "s", "markersize": 3.5,
                  "markerfacecolor": "white"},
}
_LABELS = {"lasso": "lasso", "ridge": "ridge", "least_squares": "least squares"}


def plot_results(records: list[dict[str, Any]], config: SyntheticConfig, path: str | Path) -> None:
    """Save the figure: one panel per sparsity, test R^2 (mean ± s.e.m.) against n.

    One line per (representation, predictor): colour for the predictor, thick solid for disentangled, thin
    dashed for entangled. The y-axis is clipped to `Y_LIMITS`; means below it are listed inside the
    panel. A dotted line marks the noise ceiling ``1 / (1 + noise^2)`` and a vertical one ``n = m``.

    Args:
        records: From `run_experiment`.
        config: Gives m, the seeds and the noise level for the annotations.
        path: PNG file to write.

    Example:
        >>> plot_results(records, config, "synthetic.png")  # doctest: +SKIP
    """
    figure_module = require("matplotlib.figure")
    sparsities = sorted({r["sparsity"] for r in records})
    figure = figure_module.Figure(figsize=(4.2 * len(sparsities), 4.2), layout="constrained")
    axes = figure.subplots(1, len(sparsities), sharey=True, squeeze=False)[0]
    for ax, sparsity in zip(axes, sparsities, strict=True):
        off_scale = []
        for predictor in PREDICTORS:
            for representation in REPRESENTATIONS:
                n, mean, sem = _curve(records, sparsity, representation, predictor)
                ax.errorbar(n, mean, yerr=sem, color=_COLOURS[predictor], capsize=2.5,
                            label=f"{_LABELS[predictor]}, {representation}", **_LINE_STYLES[representation])
                off_scale += [f"{_LABELS[predictor]}, {representation[:3]}., n={n_i:g}: {m_i:.1f}"
                              for n_i, m_i in zip(n, mean, strict=True) if m_i < Y_LIMITS[0]]
        ax.axhline(1.0 / (1.0 + config.noise**2), color="grey", linestyle=":", linewidth=1)
        if min(r["n"] for r in records) <= config.m <= max(r["n"] for r in records):
            ax.axvline(config.m, color="grey", linestyle=":", linewidth=1)
        if off_scale:
            ax.text(0.03, 0.03, "below the axis (mean R²):\n" + "\n".join(off_scale), transform=ax.transAxes,
                    fontsize=7, va="bottom", ha="left", bbox={"facecolor": "white", "alpha": 0.8,
                                                              "edgecolor": "none"})
        ax.set_ylim(*Y_LIMITS)
        ax.set_title(f"ℓ/m = {sparsity:.0%} (ℓ = {n_nonzero(config.m, sparsity)})")
        ax.set_xlabel("training samples n")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test R²")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=len(PREDICTORS), fontsize=8)
    figure.suptitle(f"Synthetic generalisation, m = {config.m}, noise/signal = {config.noise:g}: "
                    f"mean ± s.e.m. over {config.seeds} seeds; dotted: n = m and the noise ceiling",
                    fontsize=10)
    figure.savefig(path, dpi=130, format="png")


_TABLE_COLUMNS = [(p, r) for p in PREDICTORS for r in REPRESENTATIONS]


def format_table(records: list[dict[str, Any]], n_values: Sequence[int] | None = None) -> str:
    """A Markdown table of test R^2 (mean ± s.e.m.): one row per (sparsity, n), one column per predictor
    and representation.

    Args:
        records: From `run_experiment`.
        n_values: Keep only these n (default: all).

    Returns:
        The table, without a trailing newline.

    Example:
        >>> records = summarise({(0.05, 25, r, p): [0.5, 0.7] for p in PREDICTORS for r in REPRESENTATIONS})
        >>> format_table(records).splitlines()[2].startswith("| 5% | 25 | 0.600 ± 0.100 |")
        True
    """
    cells = {(r["sparsity"], r["n"], r["predictor"], r["representation"]): f"{r['r2_mean']:.3f} ± "
             f"{r['r2_sem']:.3f}" for r in records}
    header = ["ℓ/m", "n"] + [f"{_LABELS[p]} ({r[:3]}.)" for p, r in _TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = sorted({(r["sparsity"], r["n"]) for r in records})
    for sparsity, n in rows:
        if n_values is not None and n not in n_values:
            continue
        values = [cells.get((sparsity, n, p, r), "") for p, r in _TABLE_COLUMNS]
        lines.append("| " + " | ".join([f"{sparsity:.0%}", str(n), *values]) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``metasparse synthetic`` options to ``parser``.

    Unset options take their value from `SyntheticConfig` (or from its ``quick()`` variant with
    ``--quick``).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> parser.parse_args(["--quick", "--seeds", "3"]).seeds
        3
    """
    defaults = SyntheticConfig()
    parser.add_argument("--m", type=int, default=None, help=f"latent dimension (default {defaults.m})")
    parser.add_argument("--sparsities", type=float, nargs="+", default=None, metavar="L_OVER_M",
                        help="task sparsities l/m in (0, 1] (default "
                        f"{' '.join(map(str, defaults.sparsities))})")
    parser.add_argument("--n-train", type=int, nargs="+", default=None, metavar="N",
                        help="training-set sizes, each >= 2 (default "
                        f"{' '.join(map(str, defaults.n_train))})")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"seeds (tasks) per sparsity, >= 2 (default {defaults.seeds})")
    parser.add_argument("--n-test", type=int, default=None,
                        help=f"test samples per task (default {defaults.n_test})")
    parser.add_argument("--noise", type=float, default=None,
                        help=f"noise-to-signal ratio of standard deviations (default {defaults.noise})")
    parser.add_argument("--quick", action="store_true", help="a tiny configuration for smoke tests")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write DIR/results.json, DIR/config.json and DIR/synthetic.png, as one set: DIR "
                        "is replaced as a whole, so it must be new, empty or from an earlier run (checked "
                        "before the experiment runs)")


def config_from_args(args: argparse.Namespace) -> SyntheticConfig:
    """The configuration selected by parsed `add_arguments` options.

    Raises:
        ValueError: With the offending option named, for invalid values.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_arguments(parser)
        >>> config_from_args(parser.parse_args(["--m", "30", "--seeds", "4"])).m
        30
    """
    base = SyntheticConfig.quick() if args.quick else SyntheticConfig()
    overrides = {"m": args.m, "seeds": args.seeds, "n_test": args.n_test, "noise": args.noise,
                 "sparsities": None if args.sparsities is None else tuple(args.sparsities),
                 "n_train": None if args.n_train is None else tuple(args.n_train)}
    return dataclasses.replace(base, **{key: value for key, value in overrides.items() if value is not None})


def run(args: argparse.Namespace) -> int:
    """Run the experiment from parsed arguments: progress bar, table on stdout, files with ``--out``.

    Returns:
        0 on success.

    Raises:
        SystemExit: With a message naming the option, for invalid options or an ``--out`` that cannot be
            written (checked before the experiment runs).

    Example:
        >>> from metasparse.cli import main
        >>> main(["synthetic", "--quick", "--out", "runs/synthetic"])  # doctest: +SKIP
        0
    """
    try:
        config = config_from_args(args)
    except ValueError as error:
        raise SystemExit(f"metasparse synthetic: {error}") from error
    if args.out is not None:
        try:
            check_output_directory(args.out)
        except ValueError as error:
            raise SystemExit(f"metasparse synthetic: --out: {error}") from error
    print(f"metasparse synthetic: {config}", flush=True)
    start = time.perf_counter()
    records = run_experiment(config)
    elapsed = time.perf_counter() - start
    print(format_table(records))
    print(f"test R^2, mean ± s.e.m. over {config.seeds} seeds; {elapsed:.1f} s")
    if args.out is not None:
        for path in write_results(records, config, args.out):
            print(f"wrote {path}")
    return 0
