"""Fine-tuning a model on one user table: budgets, the early-stopped loop, LoRA wrapping and devices.

Strategies: `inference` trains nothing; `base-ft` trains every weight; `peft` trains LoRA adapters (the
`peft` library) on the attention and head projections and merges them back, so the result is again a
plain model that saves as safetensors.

The budget is in optimizer steps, sized to the table (`default_steps`), never cut by an epoch count:
small tables need many passes (a 400-row table is two 256-row batches), large ones fewer. Validation
runs every `validate_every` steps on a held-out split and the best weights are restored at the end.
Each step runs the model forward once (the caller's `loss_fn` gets one batch and returns one loss).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from basisfm.progress import progress_bar

from basisfm.config import MAX_LEARNING_RATE
from basisfm.data.batch import TableBatch
from basisfm.errors import ConfigError
from basisfm.train.deepspeed_config import adamw, warmup_cosine_schedule

STRATEGIES = ("inference", "base-ft", "peft")
REGRESSION_LOSSES = ("bits+mse", "bits")  # BasisRegressor(regression_loss=...)
# The model's linear projections LoRA adapts by default: cell/row attention, basis compression and the heads.
DEFAULT_LORA_TARGETS = ("query", "key_value", "out", "bit_head", "value_head", "category_head")
# Step budget sized to the table (`default_steps`): about EPOCHS passes over the training rows, within
# [MIN_DEFAULT_STEPS, MAX_DEFAULT_STEPS]. Measured on the public suite (benchmarks/results/finetune_budget.md): 150 steps
# left small tables near the mean, 400 with early stopping reached the per-table optimum on Boston,
# concrete and Carseats; 600 steps of a 10k-row table fit in about a minute on 2 CPU cores (the per-row model: a
# step of the in-context tab2d model costs 0.65 s at 1 thread, so episodic fine-tuning budgets large tables on its
# own, `strategies.episodic.episodic_steps`).
EPOCHS = 60
MIN_DEFAULT_STEPS = 300
MAX_DEFAULT_STEPS = 600
# What `max_steps`, `patience` and `validate_every` may be: far beyond any budget, large enough never to matter,
# small enough to stay an int64.
MAX_STEPS = 10**9
# Fewer held-out rows pick the checkpoint by noise (Boston's 40 did); in-context feature validation
# (`data.reading.features.MIN_VALIDATION_ROWS`) needs as many labelled rows, for the same reason.
MIN_VALIDATION_ROWS = 64
MIN_LR_RATIO = 0.1  # cosine decay ends at a tenth of the peak rate


@dataclass
class FineTuneSettings:
    strategy: str = "base-ft"
    max_steps: int = 400
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 4  # validation checks without a better score before stopping
    validate_every: int = 25
    warmup_steps: int = 10  # linear learning-rate warm-up, then cosine decay to MIN_LR_RATIO by max_steps
    grad_clip: float = 1.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: Sequence[str] | None = None
    seed: int = 0
    progress: bool = True
    time_budget_s: float | None = None  # stop (keeping the best weights) once this much time has passed
    device: str = "cpu"
    description: str = ""  # the progress bar's label (e.g. "member 2/3")

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r} is not one of {list(STRATEGIES)}")
        for name in ("max_steps", "patience", "lora_r", "validate_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_STEPS:
                raise ConfigError(f"{name} must be a whole number in [1, {MAX_STEPS}], got {value!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be 0 or more, got {self.warmup_steps!r}")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= MAX_LEARNING_RATE):
            raise ConfigError(f"learning_rate must be in (0, {MAX_LEARNING_RATE}], got {self.learning_rate!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be 0 or more, got {self.weight_decay!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise ConfigError(f"time_budget_s must be a positive number of seconds (or None), got {self.time_budget_s!r}")


@dataclass
class FineTuneHistory:
    checks: list[dict[str, float]] = field(default_factory=list)  # one entry per validation check
    best_step: int = 0  # the optimizer step whose weights were kept (0: the starting weights)
    steps: int = 0
    seconds: float = 0.0
    stopped_because: str = "not trained"
    trainable_parameters: int = 0


def default_steps(n_train_rows: int, rows_per_batch: int) -> int:
    """The step budget for a table: about EPOCHS passes over its training rows, within [MIN_DEFAULT_STEPS, MAX_DEFAULT_STEPS]."""
    batches_per_epoch = max(1, math.ceil(n_train_rows / max(1, rows_per_batch)))
    return int(min(MAX_DEFAULT_STEPS, max(MIN_DEFAULT_STEPS, EPOCHS * batches_per_epoch)))


def resolve_device(device: str) -> torch.device:
    """`"auto"`: CUDA when present, else CPU; otherwise the named device (an unknown name is a ConfigError)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but this machine has no CUDA device; use device='auto'")
    return resolved


def base_model(model: nn.Module) -> nn.Module:
    """The model inside a peft wrapper (or the model itself)."""
    from basisfm.losses.objective import unwrap_model

    return unwrap_model(model)


# ---------------------------------------------------------------------------- LoRA


def apply_lora(model: nn.Module, settings: FineTuneSettings) -> nn.Module:
    """Wrap `model` with LoRA adapters; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    targets = list(settings.lora_target_modules or DEFAULT_LORA_TARGETS)
    linear_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    # The defaults name every head kind's projection; a model has only its own (bits or bins).
    targets = [t for t in targets if t in linear_names] if settings.lora_target_modules is None else targets
    unknown = [t for t in targets if t not in linear_names]
    if unknown:
        raise ConfigError(f"lora_target_modules {unknown} name no linear layer of the model; "
                          f"choose from {sorted(linear_names)}")
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=targets, bias="none")
    return get_peft_model(model, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights: a plain model again (saved without any peft state)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


# ---------------------------------------------------------------------------- the loop


def fine_tune(
    model: nn.Module,
    train_batches: Callable[[int], list[TableBatch]],
    validation_score: Callable[[nn.Module], float],
    loss_fn: Callable[[nn.Module, TableBatch], torch.Tensor],
    settings: FineTuneSettings,
) -> tuple[nn.Module, FineTuneHistory]:
    """Train for `max_steps` optimizer steps (stopping early after `patience` validation checks without a
    better score, or on the time budget); returns the model, on `settings.device`, with its best weights.

    `train_batches(epoch)` gives one pass's batches (reshuffled per pass by the caller's seed); passes
    repeat until the step budget is spent. `validation_score(model)` is lower-is-better.
    """
    settings.validate()
    history = FineTuneHistory()
    device = torch.device(settings.device)
    model = model.to(device)
    if settings.strategy == "inference":
        return model.eval(), history
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    if settings.strategy == "peft":
        model = apply_lora(model, settings)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    history.trainable_parameters = int(sum(p.numel() for p in trainable))
    # The optimizer and schedule pretraining uses (basisfm.train): a short per-table loop, one recipe.
    optimizer = adamw(trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = warmup_cosine_schedule(optimizer, settings.warmup_steps, settings.max_steps, MIN_LR_RATIO)

    model.eval()
    best_score = validation_score(model)
    best_state = _trainable_state(model)
    history.checks.append({"step": 0, "train_loss": math.nan, "val_score": best_score})
    stale, step, reason, losses = 0, 0, "max_steps", []
    label = f"fine-tune ({settings.strategy}{', ' + settings.description if settings.description else ''})"
    bar = progress_bar(total=settings.max_steps, desc=label, unit="step", disable=not settings.progress)
    model.train()
    for batch in _endless(train_batches):
        loss = loss_fn(model, batch.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.detach())
        step += 1
        bar.update(1)
        out_of_steps = step >= settings.max_steps
        if not (out_of_steps or step % settings.validate_every == 0):
            continue
        model.eval()
        score = validation_score(model)
        model.train()
        history.checks.append({"step": step, "train_loss": float(torch.stack(losses).mean()), "val_score": score})
        losses = []
        bar.set_postfix(val=f"{score:.4g}", best=f"{min(best_score, score):.4g}")
        if score < best_score:
            best_score, best_state, stale = score, _trainable_state(model), 0
            history.best_step = step
        else:
            stale += 1
        if out_of_steps:
            break
        if stale >= settings.patience:
            reason = f"no better validation score for {settings.patience} checks ({settings.validate_every} steps apart)"
            break
        if settings.time_budget_s is not None and time.perf_counter() - started > settings.time_budget_s:
            reason = "time budget"
            break
    bar.close()
    model.load_state_dict(best_state, strict=False)
    if settings.strategy == "peft":
        model = merge_lora(model)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    history.steps, history.seconds, history.stopped_because = step, time.perf_counter() - started, reason
    return model, history


def _endless(train_batches: Callable[[int], list[TableBatch]]) -> Iterator[TableBatch]:
    """Pass after pass over the training rows (pass numbers from 1); the step budget decides when to stop."""
    epoch = 0
    while True:
        epoch += 1
        batches = train_batches(epoch)
        if not batches:
            raise ConfigError("fine-tuning got no training batches; the table has no usable rows")
        yield from batches


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # Only what training changes: for LoRA that is the adapters, a small copy.
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy (each ensemble member fine-tunes its own)."""
    return copy.deepcopy(model)
