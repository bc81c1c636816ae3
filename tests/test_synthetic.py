"""The synthetic generalisation experiment: the task generator, the run loop, its files and the command."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from metasparse.cli import main
from metasparse.experiments.synthetic import (
    PREDICTORS,
    SyntheticConfig,
    format_table,
    plot_results,
    run_experiment,
    score_seed,
    summarise,
)
from metasparse.tasks.sparse_linear import (
    REPRESENTATIONS,
    make_sparse_linear_task,
    n_nonzero,
    random_orthogonal,
    sparse_weights,
)

BENCHMARK_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic.py"
RECORD_KEYS = {"sparsity", "n", "representation", "predictor", "r2_mean", "r2_sem"}


# --- the generator -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "sparsity", "expected"),
                         [(100, 0.05, 5), (100, 0.2, 20), (100, 0.8, 80), (100, 1.0, 100), (50, 0.05, 3),
                          (20, 0.05, 1), (7, 0.5, 4)])
def test_sparse_weights_have_exactly_round_l_nonzeros(m, sparsity, expected):
    assert n_nonzero(m, sparsity) == expected
    rng = np.random.default_rng(0)
    supports = set()
    for _ in range(20):
        weights = sparse_weights(m, sparsity, rng)
        assert weights.shape == (m,)
        assert np.count_nonzero(weights) == expected
        supports.add(tuple(np.flatnonzero(weights)))
    assert len(supports) > 1 or expected == m  # the support is random


@pytest.mark.parametrize(("m", "sparsity", "match"),
                         [(0, 0.5, "m must be"), (100, 0.0, r"\(0, 1\]"), (100, 1.01, r"\(0, 1\]"),
                          (5, 0.05, "no non-zero")])
def test_n_nonzero_rejects_bad_input(m, sparsity, match):
    with pytest.raises(ValueError, match=match):
        n_nonzero(m, sparsity)


def test_random_orthogonal_is_orthogonal_and_haar():
    rng = np.random.default_rng(1)
    for m in (1, 5, 100):
        q = random_orthogonal(m, rng)
        assert np.abs(q.T @ q - np.eye(m)).max() < 1e-10
        assert np.abs(q @ q.T - np.eye(m)).max() < 1e-10
    # Under the Haar measure every entry has mean 0; unfixed QR signs would bias the diagonal.
    diagonals = np.array([np.diag(random_orthogonal(3, rng)) for _ in range(3000)])
    assert np.abs(diagonals.mean(axis=0)).max() < 0.05


def test_targets_have_the_documented_signal_and_noise_levels():
    rng = np.random.default_rng(2)
    task = make_sparse_linear_task(m=40, sparsity=0.2, noise=0.3, rng=rng)
    weight_norm = np.linalg.norm(task.weights)
    assert task.noise_std == pytest.approx(0.3 * weight_norm)
    latents, targets = task.sample(200_000, rng)
    residual = targets - latents @ task.weights
    assert residual.mean() == pytest.approx(0.0, abs=0.01 * task.noise_std)
    assert residual.std() == pytest.approx(task.noise_std, rel=0.01)
    assert (latents @ task.weights).std() == pytest.approx(weight_norm, rel=0.01)
    noiseless = make_sparse_linear_task(m=40, sparsity=0.2, noise=0.0, rng=rng)
    latents, targets = noiseless.sample(10, rng)
    np.testing.assert_allclose(targets, latents @ noiseless.weights, rtol=0, atol=1e-12)


def test_entangled_representation_is_the_rotated_latents_and_keeps_the_task_linear():
    rng = np.random.default_rng(3)
    task = make_sparse_linear_task(m=30, sparsity=0.1, noise=0.0, rng=rng)
    latents, targets = task.sample(50, rng)
    assert task.represent(latents, "disentangled") is latents
    entangled = task.represent(latents, "entangled")
    np.testing.assert_allclose(entangled, latents @ task.mixing.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(entangled @ (task.mixing @ task.weights), targets, rtol=0, atol=1e-10)
    assert np.count_nonzero(np.abs(task.mixing @ task.weights) > 1e-8) > 3 * np.count_nonzero(task.weights)
    with pytest.raises(ValueError, match="representation"):
        task.represent(latents, "rotated")


def test_negative_noise_is_rejected():
    with pytest.raises(ValueError, match="noise"):
        make_sparse_linear_task(10, 0.5, -0.1, np.random.default_rng(0))


# --- the experiment ------------------------------------------------------------------------------------

SMALL = SyntheticConfig(m=50, sparsities=(0.05,), n_train=(30, 60), seeds=3, n_test=2000)


@pytest.fixture(scope="module")
def small_records():
    return run_experiment(SMALL, progress=False)


def _r2(records, n, representation, predictor):
    (record,) = [r for r in records if (r["n"], r["representation"], r["predictor"])
                 == (n, representation, predictor)]
    return record["r2_mean"]


def test_disentangled_lasso_beats_entangled_lasso_and_ridge_on_sparse_tasks(small_records):
    # Far ahead with fewer samples than factors; still ahead, by less, once n > m lets ridge catch up.
    for n, margin in zip(SMALL.n_train, (0.2, 0.02), strict=True):
        disentangled_lasso = _r2(small_records, n, "disentangled", "lasso")
        assert disentangled_lasso > 0.95
        for representation in REPRESENTATIONS:
            assert disentangled_lasso > _r2(small_records, n, representation, "ridge") + margin
        assert disentangled_lasso > _r2(small_records, n, "entangled", "lasso") + margin


def test_records_have_the_schema(small_records):
    assert len(small_records) == len(SMALL.sparsities) * len(SMALL.n_train) * 2 * len(PREDICTORS)
    combos = set()
    for record in small_records:
        assert set(record) == RECORD_KEYS
        assert record["sparsity"] == 0.05 and record["n"] in SMALL.n_train
        assert record["representation"] in ("disentangled", "entangled")
        assert record["predictor"] in ("lasso", "ridge", "least_squares")
        assert isinstance(record["r2_mean"], float) and record["r2_mean"] <= 1.0
        assert isinstance(record["r2_sem"], float) and record["r2_sem"] >= 0.0
        combos.add((record["n"], record["representation"], record["predictor"]))
    assert len(combos) == len(small_records)
    json.dumps(small_records)


def test_rotation_invariant_predictors_score_the_same_on_both_representations():
    scores = score_seed(SMALL, sparsity=0.05, seed=0)
    for n in SMALL.n_train:
        for predictor in ("ridge", "least_squares"):
            assert scores[(n, "disentangled", predictor)] == pytest.approx(
                scores[(n, "entangled", predictor)], abs=1e-8)


def test_a_seed_is_reproducible_and_seeds_differ():
    config = SyntheticConfig(m=10, sparsities=(0.2,), n_train=(8,), seeds=2, n_test=100)
    assert score_seed(config, 0.2, seed=0) == score_seed(config, 0.2, seed=0)
    assert score_seed(config, 0.2, seed=0) != score_seed(config, 0.2, seed=1)


def test_summarise_gives_mean_and_standard_error():
    (record,) = summarise({(0.2, 25, "entangled", "ridge"): [0.2, 0.4, 0.9]})
    assert record["r2_mean"] == pytest.approx(0.5)
    assert record["r2_sem"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1) / np.sqrt(3))


def test_table_and_figure_handle_off_scale_least_squares(tmp_path):
    config = SyntheticConfig(m=20, sparsities=(0.05, 0.8), n_train=(10, 20), seeds=2)
    scores = {(s, n, r, p): [-30.0, -20.0] if (p, n) == ("least_squares", 20) else [0.5, 0.6]
              for s in config.sparsities for n in config.n_train for r in REPRESENTATIONS for p in PREDICTORS}
    records = summarise(scores)
    table = format_table(records, n_values=[20])
    assert len(table.splitlines()) == 2 + 2
    assert "-25.000 ± 5.000" in table
    plot_results(records, config, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the command and the benchmark script --------------------------------------------------------------


def _check_output_dir(out_dir: Path, config: SyntheticConfig) -> None:
    records = json.loads((out_dir / "results.json").read_text())
    assert isinstance(records, list) and all(set(r) == RECORD_KEYS for r in records)
    assert len(records) == len(config.sparsities) * len(config.n_train) * 2 * len(PREDICTORS)
    assert json.loads((out_dir / "config.json").read_text())["m"] == config.m
    assert (out_dir / "synthetic.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "results.json", "synthetic.png"]


def test_cli_quick_run_writes_results_and_figure(tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main(["synthetic", "--quick", "--seeds", "2", "--n-train", "10", "40", "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "| ℓ/m | n |" in printed and f"wrote {out_dir / 'results.json'}" in printed
    _check_output_dir(out_dir, SyntheticConfig(m=20, n_train=(10, 40)))


def test_benchmark_script_runs_with_the_experiment_options(tmp_path):
    bench = runpy.run_path(str(BENCHMARK_SCRIPT), run_name="benchmark")
    assert bench["RESULTS_DIR"].parts[-3:] == ("benchmarks", "results", "synthetic")
    config = SyntheticConfig(m=10, sparsities=(0.2,), n_train=(5, 10), seeds=2)
    assert bench["main"](["--m", "10", "--sparsities", "0.2", "--n-train", "5", "10", "--seeds", "2",
                          "--n-test", "200", "--out", str(tmp_path)]) == 0
    _check_output_dir(tmp_path, config)


@pytest.mark.parametrize(("argv", "option"),
                         [(["--sparsities", "0"], "--sparsities"), (["--sparsities", "1.5"], "--sparsities"),
                          (["--n-train", "1", "10"], "--n-train"), (["--m", "0"], "--m"),
                          (["--seeds", "1"], "--seeds"), (["--n-test", "1"], "--n-test"),
                          (["--noise", "-0.5"], "--noise"), (["--m", "5", "--sparsities", "0.05"], "--m")])
def test_bad_options_fail_with_a_message_naming_the_option(argv, option):
    with pytest.raises(SystemExit) as exit_info:
        main(["synthetic", "--quick", *argv])
    assert option in str(exit_info.value.code)


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    from metasparse.experiments import synthetic

    config = SyntheticConfig(m=10, sparsities=(0.2,), n_train=(5,), seeds=2, n_test=50)
    records = summarise({(0.2, 5, r, p): [0.1, 0.2] for r in REPRESENTATIONS for p in PREDICTORS})
    synthetic.write_results(records, config, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken_plot(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "plot_results", broken_plot)
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.write_results(records[:1], config, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("make_out", [lambda tmp: tmp / "a_file" / "out",
                                      lambda tmp: Path("/proc/metasparse-out"), lambda tmp: tmp / "used"])
def test_an_unwritable_out_fails_before_the_experiment_runs(tmp_path, monkeypatch, make_out):
    from metasparse.experiments import synthetic

    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("someone's file")
    monkeypatch.setattr(synthetic, "run_experiment", lambda *a, **k: pytest.fail("the experiment ran"))
    with pytest.raises(SystemExit) as exit_info:
        main(["synthetic", "--quick", "--out", str(make_out(tmp_path))])
    assert "--out" in str(exit_info.value.code)
    assert (tmp_path / "used" / "notes.txt").exists()


def _config(m):
    return SyntheticConfig(m=m, sparsities=(0.2,), n_train=(5,), seeds=2)


def _records(value):
    return summarise({(0.2, 5, r, p): [value, value + 0.1] for r in REPRESENTATIONS for p in PREDICTORS})


def test_the_result_set_is_replaced_as_a_unit_and_a_terminated_write_keeps_the_old_one(tmp_path, monkeypatch):
    import os
    import signal

    from metasparse.experiments import synthetic

    out = tmp_path / "out"
    synthetic.write_results(_records(0.1), _config(10), out)
    synthetic.write_results(_records(0.5), _config(12), out)
    assert json.loads((out / "config.json").read_text())["m"] == 12
    assert json.loads((out / "results.json").read_text())[0]["r2_mean"] == pytest.approx(0.55)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["config.json", "results.json", "synthetic.png"]

    def terminated_plot(records, config, path):
        path.write_bytes(b"half a figure")
        os.kill(os.getpid(), signal.SIGTERM)  # `kill PID` in the middle of the write

    monkeypatch.setattr(synthetic, "plot_results", terminated_plot)
    with pytest.raises(SystemExit):
        synthetic.write_results(_records(0.9), _config(14), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_temporaries_of_a_killed_process_are_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from metasparse.atomic import replace_directory_atomically, write_atomically

    out = tmp_path / "out"
    # a process killed outright (SIGKILL) in the middle of both kinds of writes
    script = ("import os, signal, sys\n"
              "from metasparse.atomic import replace_directory_atomically, write_atomically\n"
              "def die(path):\n"
              "    (path / 'x' if path.is_dir() else path).write_text('partial')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "target = sys.argv[1]\n"
              "(replace_directory_atomically if sys.argv[2] == 'dir' else write_atomically)(target, die)\n")
    for kind, target in (("dir", out), ("file", tmp_path / "figure.png")):
        killed = subprocess.run([sys.executable, "-c", script, str(target), kind])
        assert killed.returncode == -9
    assert len(list(tmp_path.glob(".*.tmp"))) == 2
    replace_directory_atomically(out, lambda directory: (directory / "results.json").write_text("[]"))
    write_atomically(tmp_path / "figure.png", lambda path: path.write_bytes(b"png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "out"]
    assert [p.name for p in out.iterdir()] == ["results.json"]


def test_an_out_link_keeps_pointing_at_the_replaced_directory(tmp_path):
    from metasparse.experiments import synthetic

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    synthetic.write_results(_records(0.1), _config(10), tmp_path / "link")
    synthetic.write_results(_records(0.2), _config(11), tmp_path / "link")
    assert (tmp_path / "link").is_symlink()
    assert json.loads((tmp_path / "real" / "config.json").read_text())["m"] == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
