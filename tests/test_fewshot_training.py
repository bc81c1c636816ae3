"""Few-shot meta-training end to end on shapes3d-fs: CLI, kill and resume, two-process torchrun, evaluate."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metasparse.train import FewShotConfig, load_checkpoint, read_metrics, smoothed_cross_entropy

pytestmark = pytest.mark.slow

# A run small enough for seconds on 2 cores: 16x16 images, an 8-channel CNN4 (8 features), 3-way episodes.
TINY = ["--image-size", "16", "--hidden-size", "8", "--n-way", "3", "--train-shot", "2", "--train-query", "2",
        "--episodes-per-batch", "2", "--val-shot", "2", "--val-query", "2", "--val-episodes", "4",
        "--steps", "6", "--validate-every", "2", "--device", "cpu", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def metasparse(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metasparse.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, check=False)


def without_times(summary: dict) -> dict:
    return {key: {k: v for k, v in record.items() if k != "seconds"} if isinstance(record, dict) else record
            for key, record in summary.items()}


def train_losses(run: Path) -> list[float]:
    return [record["loss"] for record in read_metrics(run) if record["split"] == "train"]


def test_a_killed_run_resumes_to_the_same_checkpoint_metrics(tmp_path):
    full = metasparse("train", "--out", str(tmp_path / "full"), "--head", "group-lasso", *TINY)
    assert full.returncode == 0, full.stderr
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["last"]["step"] == 6 and 0 <= summary["best"]["features_used"] <= 1

    # Kill with SIGKILL at a random moment after the first checkpoint, then resume.
    command = [sys.executable, "-m", "metasparse.cli", "train", "--out", str(tmp_path / "cut"),
               "--head", "group-lasso", *TINY]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (tmp_path / "cut" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    resumed = metasparse("train", "--out", str(tmp_path / "cut"), "--head", "group-lasso", *TINY, "--resume")
    assert resumed.returncode == 0, resumed.stderr

    resumed_summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert without_times(resumed_summary) == without_times(summary)
    assert train_losses(tmp_path / "cut") == train_losses(tmp_path / "full")
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(tmp_path / "full" / name), load_checkpoint(tmp_path / "cut" / name)
        assert a["step"] == b["step"]
        for key, value in a["trainer"]["backbone"].items():
            assert torch.equal(value, b["trainer"]["backbone"][key]), key
    assert not list(tmp_path.rglob("*.tmp"))

    again = metasparse("train", "--out", str(tmp_path / "full"), "--head", "group-lasso", *TINY)
    assert again.returncode != 0 and "--resume" in again.stderr

    evaluation = metasparse("evaluate", str(tmp_path / "full"), "--shots", "1", "2", "--episodes", "6",
                            "--query", "3")
    assert evaluation.returncode == 0, evaluation.stderr
    results = json.loads((tmp_path / "full" / "evaluation-test.json").read_text())
    assert set(results) == {"1-shot", "2-shot"}
    assert all(r["episodes"] == 6 and 0 <= r["accuracy"] <= 100 for r in results.values())
    assert "1-shot: accuracy" in evaluation.stdout


def test_two_torchrun_processes_follow_the_single_process_loss_curve(tmp_path):
    single = metasparse("train", "--out", str(tmp_path / "one"), "--head", "group-lasso", *TINY)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "metasparse.cli", "train", "--out", str(tmp_path / "two"), "--head", "group-lasso",
                *TINY]
    double = subprocess.run(torchrun, capture_output=True, text=True, timeout=300, env=ENV, check=False)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = torch.tensor(train_losses(tmp_path / "one")), torch.tensor(train_losses(tmp_path / "two"))
    assert len(one) == len(two) == 6
    assert torch.allclose(two, one, rtol=1e-5, atol=0), (one, two)
    validation = [[r["accuracy"] for r in read_metrics(run) if r["split"] == "validation"]
                  for run in (tmp_path / "one", tmp_path / "two")]
    assert validation[0] == pytest.approx(validation[1], abs=1e-6)
    saved = load_checkpoint(tmp_path / "two" / "last.pt")
    assert len(saved["rng"]) == 2  # both ranks' generators, for an exact resume


def test_config_errors_name_the_setting():
    with pytest.raises(ValueError, match="lambda1_ratio"):
        FewShotConfig(lambda1_ratio=1.5)
    with pytest.raises(ValueError, match="head must be one of"):
        FewShotConfig(head="lasso")
    with pytest.raises(ValueError, match="lr_milestones"):
        FewShotConfig(lr_milestones=(0.5,))
    schedule = FewShotConfig(steps=60)
    multipliers = [schedule.lr_multiplier(step) for step in (0, 19, 20, 39, 40, 50)]
    assert multipliers == [1, 1, 0.06, 0.06, 0.012, 0.0024]


def test_label_smoothing_is_metaoptnets():
    logits = torch.randn(4, 5)
    labels = torch.tensor([0, 3, 1, 4])
    target = torch.full((4, 5), 0.1 / 4).scatter_(1, labels[:, None], 0.9)
    expected = -(target * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(smoothed_cross_entropy(logits, labels, 0.1), expected)


def test_resnet12_forward_counters_are_saved_for_an_exact_resume():
    from metasparse.train import FewShotTrainer
    from metasparse.train.fewshot import _forward_counts

    config = FewShotConfig(backbone="resnet12", image_size=16, dropblock_size=1, n_way=2, train_shot=1,
                           train_query=1, episodes_per_batch=1, val_shot=1, val_query=1, val_episodes=1,
                           steps=1, validate_every=1, device="cpu", head="ridge")
    trainer = FewShotTrainer(config)
    assert trainer.feature_dim == 640
    trainer.train_step(0)
    counts = _forward_counts(trainer.backbone)
    assert counts and set(counts.values()) == {3}  # the size probe, support, query: DropBlock ramps with them
    fresh = FewShotTrainer(config)
    fresh.load_state_dict(trainer.state_dict())
    assert _forward_counts(fresh.backbone) == counts


def test_the_demo_trains_both_heads_and_prints_their_comparison(tmp_path, capsys):
    from metasparse.demo import DEMO_HEADS, run_demo

    assert run_demo(tmp_path, steps=2, episodes=4, progress=False) == 0
    table = capsys.readouterr().out
    for name in DEMO_HEADS.values():
        assert name in table
    report = json.loads((tmp_path / "demo.json").read_text())
    assert set(report) == set(DEMO_HEADS)
    for result in report.values():
        assert set(result["evaluation"]) == {"1-shot", "5-shot"}
        assert result["summary"]["last"]["step"] == 2
        assert result["step_times"]["step"] >= result["step_times"]["head"] > 0
    # a second run resumes: nothing is trained or evaluated again
    assert run_demo(tmp_path, steps=2, episodes=4, progress=False) == 0
    again = json.loads((tmp_path / "demo.json").read_text())
    assert all(again[head]["evaluation"] == report[head]["evaluation"] for head in DEMO_HEADS)


def test_class_factors_make_the_classes_of_training_and_evaluation(tmp_path, monkeypatch):
    import metasparse.data as data

    seen = []
    original = data.benchmark_dataset
    monkeypatch.setattr(data, "benchmark_dataset", lambda *args, **kwargs: seen.append(
        (args[1], kwargs.get("class_factors"))) or original(*args, **kwargs))
    config = FewShotConfig(image_size=16, hidden_size=8, n_way=3, train_shot=2, train_query=2,
                           episodes_per_batch=2, val_shot=2, val_query=2, val_episodes=4, steps=2,
                           validate_every=2, device="cpu", class_factors=("scale", "orientation"))
    from metasparse.train import train_and_evaluate

    result = train_and_evaluate(config, tmp_path / "run", shots=(1,), episodes=4, progress=False)
    assert seen == [(split, ("scale", "orientation")) for split in ("train", "validation", "test")]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["class_factors"] == ["scale", "orientation"]
    assert 0 <= result["evaluation"]["1-shot"]["accuracy"] <= 100
