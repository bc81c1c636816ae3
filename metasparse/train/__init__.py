"""Training: one run machinery (config, checkpoints with RNG state, exact resume, JSONL log, progress,
``torchrun`` data parallelism) under the episodic few-shot trainer and the bilevel regression trainer."""

from metasparse.train.bilevel import BilevelTrainer, DisentangleConfig, evaluate_encoder, score_representation
from metasparse.train.config import add_config_arguments, config_from_args, config_from_dict, option
from metasparse.train.fewshot import (
    HEADS,
    FewShotConfig,
    FewShotTrainer,
    evaluate_checkpoint,
    evaluate_episodes,
    make_head,
    smoothed_cross_entropy,
    train_and_evaluate,
)
from metasparse.train.run import RunOptions, Trainer, load_checkpoint, read_metrics, run_training

__all__ = [
    "HEADS",
    "BilevelTrainer",
    "DisentangleConfig",
    "FewShotConfig",
    "FewShotTrainer",
    "RunOptions",
    "Trainer",
    "add_config_arguments",
    "config_from_args",
    "config_from_dict",
    "evaluate_checkpoint",
    "evaluate_encoder",
    "evaluate_episodes",
    "load_checkpoint",
    "make_head",
    "option",
    "read_metrics",
    "run_training",
    "score_representation",
    "smoothed_cross_entropy",
    "train_and_evaluate",
]
