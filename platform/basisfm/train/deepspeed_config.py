"""The DeepSpeed side of training: the engine config, the optimizer and the warm-up + cosine schedule.

On CPU: fp32, gloo, and a plain `torch.optim.AdamW` (DeepSpeed's own optimizers would JIT-compile C++
ops first). On GPU: bf16 through DeepSpeed's torch autocast (weights and optimizer stay fp32; a batch's
float64 values and float32 embeddings need no casting), NCCL, and DeepSpeed's AdamW (fused, or its CPU
Adam when the optimizer state is offloaded to host memory).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from basisfm.config import TrainConfig


def build_deepspeed_config(train: TrainConfig) -> dict[str, Any]:
    """The engine config for `train`. One micro-batch is one TableBatch (tables differ in shape, so they are
    never stacked); `micro_batch_tables` batches are accumulated per optimizer step."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage >= 1 and train.use_gpu:
        zero.update(contiguous_gradients=True, overlap_comm=True)
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": train.micro_batch_tables,
        "zero_optimization": zero,
        "bf16": {"enabled": False},  # bf16 *weights* would clash with the batch's fp32/fp64 inputs
        "fp16": {"enabled": False},
        "torch_autocast": {"enabled": train.use_gpu, "dtype": "bfloat16"},
        "gradient_clipping": train.grad_clip,
        # Our schedule and optimizer are plain torch objects; DeepSpeed only has to accept them.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # progress is ours (tqdm on rank 0), not DeepSpeed's log lines
        "wall_clock_breakdown": False,
    }
    if train.use_gpu:
        config["optimizer"] = {"type": "AdamW", "params": {"lr": train.lr, "weight_decay": train.weight_decay,
                                                           "betas": [0.9, 0.95], "eps": 1e-8}}
    return config


def build_optimizer(params: Iterable[torch.nn.Parameter], train: TrainConfig) -> torch.optim.Optimizer | None:
    """A plain AdamW on CPU; None on GPU, where DeepSpeed builds its own from the config's `optimizer`."""
    if train.use_gpu:
        return None
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, betas=(0.9, 0.95), eps=1e-8)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up over `warmup_steps`, then
    cosine decay to `min_ratio` at `total_steps` (held there after). The one schedule pretraining and
    fine-tuning share."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """The lr multiplier as an object: LambdaLR's state_dict records an object's attributes (a bare lambda's
    it cannot), so a resumed run checks out the same schedule."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped by DeepSpeed once per optimizer step (at gradient-accumulation boundaries)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(train.warmup_steps, train.steps, train.min_lr_ratio))
