"""Pretraining: one loop (`loop.run_training`) over a DeepSpeed engine, launched by Ray Train workers
(`ray_launcher`) or in one process without Ray (`local_launcher`); checkpoints, validation, `pretrain()`."""

from basisfm.train.evaluate import ValidationSuite, evaluate_batches
from basisfm.train.trainer import PretrainResult, build_trainer, pretrain

__all__ = ["PretrainResult", "ValidationSuite", "build_trainer", "evaluate_batches", "pretrain"]
