"""Distributed pretraining: Ray Train workers driving DeepSpeed engines, checkpoints, validation, `pretrain()`."""

from basisfm.train.evaluate import ValidationSuite, evaluate_batches
from basisfm.train.promotion import promote_registered
from basisfm.train.trainer import PretrainResult, build_trainer, pretrain

__all__ = ["PretrainResult", "ValidationSuite", "build_trainer", "evaluate_batches", "pretrain", "promote_registered"]
