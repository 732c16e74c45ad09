"""The DeepSpeed side of training: the engine config, the optimizer, the warm-up + cosine schedule and the engine.

On CPU: fp32 and gloo. On GPU: bf16 through DeepSpeed's torch autocast (weights and optimizer stay fp32; a
batch's float64 values and float32 embeddings need no casting) and NCCL. Everywhere a plain
`torch.optim.AdamW` (fused on CUDA), or one of basisfm.train.optimizers (`train.optimizer`), handed to DeepSpeed: DeepSpeed's own optimizers JIT-compile C++/CUDA ops
at engine start (~40 s on an H200, and a crash when TORCH_CUDA_ARCH_LIST reads `9.0a`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from basisfm.config import TrainConfig


def build_deepspeed_config(train: TrainConfig) -> dict[str, Any]:
    """The engine config for `train`. One micro-batch is a list of `pack_tables` TableBatches (tables differ in
    shape, so they are never stacked: their losses are averaged); `micro_batch_tables` micro-batches are
    accumulated per optimizer step."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage >= 1 and train.use_gpu:
        zero.update(contiguous_gradients=True, overlap_comm=True)
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if train.offload_optimizer:
        # Offloaded state is stepped on the host; DeepSpeed would insist on its (JIT-built) CPU Adam.
        config_extra = {"zero_force_ds_cpu_optimizer": False}
    else:
        config_extra = {}
    config: dict[str, Any] = {
        **config_extra,
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
    return config


def build_optimizer(params: Iterable, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `train.optimizer` names over `params` (parameters, or (name, parameter) pairs: Muon needs the
    names to tell the blocks' matrices from the rest). `adamw`: torch's, fused (one kernel for all tensors) when the
    state lives on the GPU, the default (foreach) implementation on the host, whose offloaded state the fused kernel
    cannot step. The others are basisfm.train.optimizers' (config validation keeps them at ZeRO-0)."""
    from basisfm.train.optimizers import Lamb, Muon, SophiaG

    named = list(params)
    has_names = bool(named) and isinstance(named[0], tuple)
    plain = [p for _, p in named] if has_names else named
    betas = (float(train.adam_betas[0]), float(train.adam_betas[1]))
    if train.optimizer == "lamb":
        return Lamb(plain, lr=train.lr, betas=betas, weight_decay=train.weight_decay)
    if train.optimizer == "sophia":
        return SophiaG(plain, lr=train.lr, betas=tuple(train.sophia_betas), rho=train.sophia_rho,
                       weight_decay=train.weight_decay, hessian_every=train.sophia_hessian_every)
    if train.optimizer == "muon":
        if not has_names:
            raise TypeError("build_optimizer: train.optimizer=muon needs (name, parameter) pairs "
                            "(module.named_parameters()) to find the blocks' matrices")
        return Muon.grouped(named, lr=train.lr, momentum=train.muon_momentum, betas=betas,
                            weight_decay=train.weight_decay)
    fused = train.use_gpu and not train.offload_optimizer
    return adamw(plain, lr=train.lr, weight_decay=train.weight_decay, betas=train.adam_betas, fused=fused or None)


def adamw(params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float, betas=(0.9, 0.999),
          fused: bool | None = None) -> torch.optim.AdamW:
    """The one optimizer every training loop here uses (pretraining through DeepSpeed, per-table fine-tuning)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(float(betas[0]), float(betas[1])), eps=1e-8,
                             fused=fused)


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
    return warmup_cosine_schedule(optimizer, train.warmup_steps, train.schedule_steps or train.steps, train.min_lr_ratio)


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                           min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """`warmup_cosine_factor` as a scheduler stepped once per optimizer step: pretraining's and fine-tuning's."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))


def build_engine(config, device: torch.device):
    """(DeepSpeed engine, lr scheduler) wrapping the model's training objective, on `device`: a fresh model, or
    the warm start `train.init_from` names (grown to `train.grow_layers`); a resumed run then loads its shards over it.

    The torch process group must exist (Ray Train makes it; the local launcher makes a one-rank group) and
    DS_ACCELERATOR must be set before `deepspeed` is first imported (it picks its accelerator once).
    Same seed on every rank: identical initial weights (DeepSpeed also broadcasts rank 0's).
    """
    import deepspeed

    from basisfm.losses import build_objective
    from basisfm.train.warm_start import initial_model

    train = config.train
    deepspeed.init_distributed(dist_backend="nccl" if train.use_gpu else "gloo")
    torch.manual_seed(train.seed)
    model = initial_model(config)
    if train.compile:
        compile_blocks(model)
    # On the device before the optimizer sees the parameters: the fused AdamW steps them where they live.
    objective = build_objective(model, config.model, config.loss).to(device)
    optimizer = build_optimizer([(n, p) for n, p in objective.named_parameters() if p.requires_grad], train)
    if train.optimizer == "sophia":  # its Hessian estimate needs forwards of its own: hooked on the objective's
        from basisfm.train.optimizers import attach_gnb_hessian

        attach_gnb_hessian(objective, optimizer)
    engine, _, _, scheduler = deepspeed.initialize(
        model=objective,
        optimizer=optimizer,
        lr_scheduler=lambda opt: build_scheduler(opt, train),
        config=build_deepspeed_config(train),
    )
    return engine, scheduler


def compile_blocks(model: torch.nn.Module) -> int:
    """torch.compile each transformer block in place; returns how many.

    Blocks, not the whole model: the model's forward reads column names and shapes on the host (guards on
    them would recompile for every table); a block is pure tensor work. `dynamic=True` because rows,
    columns and target slots change from table to table. In place (`Module.compile`), so parameter names
    and checkpoints are unchanged.
    """
    from basisfm.model.attention import Block

    blocks = [module for module in model.modules() if isinstance(module, Block)]
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)
