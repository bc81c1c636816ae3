"""The shared run machinery: checkpoints, exact resume, log truncation, config checks, flags and files."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass

import pytest
import torch

from metasparse.tasks import derive_seed, rng_state, seed_everything, seeded, set_rng_state
from metasparse.train import (
    RunOptions,
    add_config_arguments,
    config_from_args,
    option,
    read_metrics,
    run_training,
)
from metasparse.train.run import load_checkpoint


class NoisyQuadratic:
    """A trainer whose every step draws from torch's and Python's generators, so resume must restore both."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.weight = torch.zeros(3)
        self.stop_after = stop_after

    def train_step(self, step: int) -> dict[str, float]:
        if self.stop_after is not None and step == self.stop_after:
            raise KeyboardInterrupt  # a kill between two checkpoints
        noise = torch.randn(3) * 0.1 + random.random()
        self.weight -= 0.3 * (self.weight - 1.0 + noise)
        return {"loss": float(((self.weight - 1.0) ** 2).sum())}

    def validate(self) -> dict[str, float]:
        return {"loss": float(((self.weight - 1.0) ** 2).sum()), "noise": float(torch.rand(()))}

    def state_dict(self) -> dict:
        return {"weight": self.weight.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.weight = state["weight"].clone()


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path):
    options = dict(steps=9, validate_every=2, progress=False)
    seed_everything(0)
    full = run_training(NoisyQuadratic(), {"seed": 0}, RunOptions(tmp_path / "full", **options))

    seed_everything(0)
    with pytest.raises(KeyboardInterrupt):
        run_training(NoisyQuadratic(stop_after=5), {"seed": 0}, RunOptions(tmp_path / "cut", **options))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 4
    assert max(r["step"] for r in read_metrics(tmp_path / "cut")) == 5  # logged past the checkpoint
    seed_everything(123)  # whatever ran in between: resume restores the generators
    resumed = run_training(NoisyQuadratic(), {"seed": 0},
                           RunOptions(tmp_path / "cut", resume=True, **options))

    assert resumed == full
    assert read_metrics(tmp_path / "cut") == read_metrics(tmp_path / "full")
    steps = [r["step"] for r in read_metrics(tmp_path / "full") if r["split"] == "train"]
    assert steps == list(range(1, 10))
    best = load_checkpoint(tmp_path / "cut")  # the directory means best.pt
    assert best["step"] == full["best"]["step"] and best["best"] == full["best"]
    assert json.loads((tmp_path / "cut" / "summary.json").read_text()) == json.loads(json.dumps(full))
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_existing_run_is_not_overwritten_and_a_changed_config_is_not_resumed(tmp_path):
    options = dict(steps=2, validate_every=1, progress=False)
    run_training(NoisyQuadratic(), {"lr": 0.1}, RunOptions(tmp_path, **options))
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(NoisyQuadratic(), {"lr": 0.1}, RunOptions(tmp_path, **options))
    with pytest.raises(ValueError, match=r"differs in \['lr'\]"):
        run_training(NoisyQuadratic(), {"lr": 0.2}, RunOptions(tmp_path, resume=True, **options))
    longer = run_training(NoisyQuadratic(), {"lr": 0.1, "steps": 4},
                          RunOptions(tmp_path, resume=True, steps=4, validate_every=1, progress=False))
    assert longer["last"]["step"] == 4


def test_run_options_and_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="steps must be a positive int"):
        RunOptions(tmp_path, steps=0, validate_every=1)
    with pytest.raises(ValueError, match="best_mode"):
        RunOptions(tmp_path, steps=1, validate_every=1, best_mode="largest")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_checkpoint(tmp_path)
    (tmp_path / "x.pt").write_bytes(b"")
    torch.save({"something": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a metasparse checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


def test_rng_state_round_trip_and_seeded_blocks_leave_the_outer_stream_alone():
    seed_everything(5)
    state = rng_state()
    first = (random.random(), float(torch.rand(())))
    set_rng_state(state)
    assert (random.random(), float(torch.rand(()))) == first
    set_rng_state(state)
    with seeded(99):
        random.random()
        torch.rand(3)
    assert (random.random(), float(torch.rand(()))) == first
    assert len({derive_seed(0, step, index) for step in range(20) for index in range(8)}) == 160
    with pytest.raises(ValueError, match="seed must be an int"):
        seed_everything(1.5)


@dataclass(frozen=True)
class ToyConfig:
    lr: float = option(0.1, "learning rate")
    milestones: tuple[float, ...] = option((0.5, 0.75), "lr drops")
    head: str = option("svm", "head", ("svm", "ridge"))
    amp: bool = option(True, "autocast")
    root: str | None = option(None, "data folder")


def test_config_flags_file_and_overrides(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ToyConfig)
    assert "(default: 0.1)" in parser.format_help() and "--milestones" in parser.format_help()
    assert config_from_args(ToyConfig, parser.parse_args([])) == ToyConfig()
    file = tmp_path / "config.json"
    file.write_text(json.dumps({"lr": 0.5, "milestones": [0.2], "head": "ridge"}))
    args = parser.parse_args(["--config", str(file), "--lr", "0.3", "--no-amp"])
    config = config_from_args(ToyConfig, args)
    assert config == ToyConfig(lr=0.3, milestones=(0.2,), head="ridge", amp=False)
    file.write_text(json.dumps({"learning_rate": 0.5}))
    with pytest.raises(ValueError, match="unknown settings \\['learning_rate'\\]"):
        config_from_args(ToyConfig, parser.parse_args(["--config", str(file)]))
    file.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        config_from_args(ToyConfig, parser.parse_args(["--config", str(file)]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--head", "lasso"])
