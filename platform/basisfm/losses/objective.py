"""The training objective and the regression maths every fitting path shares.

Two public functions are the one place a numeric target is scored and read out, for pretraining and
fine-tuning alike:
  - `regression_loss(model, out, batch, gamma=None)`: the per-target loss [N_numeric] of one forward,
    SMR bit cross-entropy or HL-Gauss over bins of the standardised target, by `model.regression_head`;
  - `decode_numeric(model, out, batch, quantiles=None)`: point predictions [N] float64 in the target's
    own units (the predicted distribution's mean) and, on request, its quantiles [N, Q].
`numeric_targets(out, batch)` says which of the N target cells they score.

The masked-cell / episode objective (`PretrainingObjective`): predict every hidden cell of every row,
weight the tasks, one scalar out. Numeric-like targets use `regression_loss`, categorical ones score the
column's strings. Targets are grouped into a fixed set of tasks (numeric / categorical, each split into
`task_buckets` buckets of hashed column names) so learned task weights keep one shape across tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from basisfm.config import LossConfig, ModelConfig
from basisfm.data.batch import TableBatch
from basisfm.errors import ConfigError
from basisfm.encoding.missing import stable_name_bucket
from basisfm.encoding.smr import SMRCodec, sanitize
from basisfm.losses.smr_loss import adaptive_weight, smr_bit_loss
# Decoding is the model's: the loss reads predictions out the way the model does.
from basisfm.model.decoding import decode_numeric, numeric_targets, truth_and_scale, unwrap_model
from basisfm.losses.weighting import GradientNormWeighting, MGDAWeighting, UncertaintyWeighting

if TYPE_CHECKING:
    from basisfm.model.table_model import ModelOutput, TableModel


# --------------------------------------------------------------------------- regression: loss and read-out


def regression_loss(model: nn.Module, out: "ModelOutput", batch: TableBatch, gamma: float | None = None) -> torch.Tensor:
    """[N_numeric] float32 loss of each scored numeric target (`numeric_targets(out, batch)`, in order).

    `smr_bits`: mean binary cross-entropy over the target's bits; with `gamma` each target is weighted by
    the paper's adaptive reweighting (eq. 3-4), computed from the expected value, so relatively large
    errors count more. `binned`: HL-Gauss cross-entropy against z = (y - column_mean) / column_std (the
    batch's scale: support / training rows'); `gamma` does not apply (its errors are already relative).
    """
    base = unwrap_model(model)
    keep = numeric_targets(out, batch)
    truth, mean, std = (t[keep] for t in truth_and_scale(out, batch))
    if out.value_logits is not None:
        z = ((truth - mean) / std).float()
        return base.bins.loss(out.value_logits[keep], z)
    codec: SMRCodec = base.codec
    top, low = out.window_top[keep], out.window_low[keep]
    bits, _ = codec.encode(truth, top, low)
    loss = smr_bit_loss(out.bit_logits[keep], bits).float()
    if gamma is not None:
        with torch.no_grad():
            y_hat = codec.expected_value(torch.sigmoid(out.bit_logits[keep].detach().double()), top, low)
        loss = loss * adaptive_weight(truth, y_hat, gamma).to(loss.dtype)
    return loss


# --------------------------------------------------------------------------- the pretraining objective


@dataclass
class LossResult:
    loss: torch.Tensor  # the scalar to backward
    metrics: dict[str, float]
    numeric_pred: torch.Tensor  # [N] float64 predictions at scored numeric targets (the distribution's mean)
    numeric_true: torch.Tensor  # [N] float64 their true values
    numeric_column: list[str]  # [N] the column each belongs to


def _several_ranks() -> bool:
    """Whether this step is one of several data-parallel ranks' (a distributed group of more than one process)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def _every_parameter_at_zero(module: nn.Module) -> torch.Tensor:
    """A zero that every trainable parameter of `module` takes part in, so each gets a (zero) gradient this step.

    Why: a batch leaves some parameters out of the graph (no categorical target: the label projection; no text
    cell: the text projection), and under DeepSpeed ZeRO-2 each rank reduces gradients in buckets as they arrive. A
    rank whose bucket lacks a parameter another rank's holds reduces a tensor of another size: gloo aborts the worker
    ("op.preamble.length <= op.nbytes. 845632 vs 841472", a 64x64 projection missing; `make demo`, two Ray workers).
    With one rank nothing is reduced and the optimizer skips parameters without a gradient, as it always did. ZeRO-3
    partitions its parameters (`ds_tensor`) and skips unused ones itself: they are left out."""
    zero = torch.zeros((), device=next(module.parameters()).device)
    return sum((p.sum() * 0.0 for p in module.parameters() if p.requires_grad and not hasattr(p, "ds_tensor")), zero)


class PretrainingObjective(nn.Module):
    """Holds the model and any learnable loss weights: the one module the trainer (and DeepSpeed) wraps."""

    def __init__(self, model: "TableModel", loss_config: LossConfig):
        super().__init__()
        self.model = model
        self.config = loss_config
        self.n_buckets = loss_config.task_buckets
        self.task_names = [f"numeric{b}" if self.n_buckets > 1 else "numeric" for b in range(self.n_buckets)] + [
            f"categorical{b}" if self.n_buckets > 1 else "categorical" for b in range(self.n_buckets)
        ]
        n_tasks = len(self.task_names)
        self.register_buffer(
            "task_scale", torch.tensor([1.0] * self.n_buckets + [loss_config.categorical_weight] * self.n_buckets), persistent=False
        )
        weighting = loss_config.weighting
        self.uncertainty = UncertaintyWeighting(n_tasks) if weighting == "uncertainty" else None
        self.gradient_norm = GradientNormWeighting(n_tasks, loss_config.grad_norm_ema) if weighting == "gradient_norm" else None
        self.mgda = MGDAWeighting() if weighting == "mgda" else None

    def forward(self, batch: TableBatch) -> LossResult:
        out = self.model(batch)
        rows, cols = out.target_rows, out.target_columns
        values, _ = sanitize(batch.values, batch.missing)
        true_ids = batch.string_ids[rows, cols]
        numeric = numeric_targets(out, batch)
        # A categorical target counts when its label is among the column's visible strings (its logit is
        # finite): a label seen nowhere else in the batch cannot be chosen, and would make the loss infinite.
        safe_ids = true_ids.clamp_min(0)
        categorical = ~out.is_numeric & (true_ids >= 0)
        if out.category_logits.shape[1] > 0:
            categorical &= torch.isfinite(out.category_logits.gather(1, safe_ids.unsqueeze(1)).squeeze(1))
        else:
            categorical &= False

        # Per-target losses (zero where a target belongs to the other kind or has no truth).
        gamma = self.config.gamma if self.config.weighting == "paper" else None
        numeric_loss = regression_loss(self.model, out, batch, gamma=gamma)
        y = values[rows, cols][numeric]
        # The prediction is the distribution's mean (the read-out predict_numeric uses); it feeds the R2
        # the trainer reports, never the gradient.
        y_hat = decode_numeric(self.model, out, batch)[0][numeric]
        category_loss = F.cross_entropy(out.category_logits[categorical], true_ids[categorical], reduction="none")
        # Losses are summed in float32 even when the model runs in bf16/fp16 (DeepSpeed), for a stable scale.
        per_target = torch.zeros(len(rows), dtype=torch.float32, device=out.hidden.device)
        per_target = per_target.masked_scatter(numeric, numeric_loss.float()).masked_scatter(categorical, category_loss.float())

        # Tasks: mean loss per (kind, name bucket).
        buckets = torch.tensor(
            [stable_name_bucket(name, self.n_buckets) for name in batch.column_names], dtype=torch.long, device=rows.device
        )[cols]
        task = torch.where(numeric, buckets, buckets + self.n_buckets)
        counted = numeric | categorical
        n_tasks = len(self.task_names)
        sums = torch.zeros(n_tasks, dtype=per_target.dtype, device=per_target.device).index_add(0, task[counted], per_target[counted])
        counts = torch.zeros(n_tasks, device=per_target.device).index_add(0, task[counted], torch.ones_like(per_target[counted]))
        active = counts > 0
        task_losses = self.task_scale * sums / counts.clamp_min(1)

        loss, weights = self.combine(task_losses, active, out.basis)
        if not counted.any():  # no usable target: a zero that still touches the graph (every rank must backward)
            regression = out.bit_logits if out.bit_logits is not None else out.value_logits
            loss = regression.sum() * 0.0 + out.basis.sum() * 0.0 + out.hidden.sum() * 0.0
        if torch.is_grad_enabled() and _several_ranks():
            loss = loss + _every_parameter_at_zero(self)

        metrics = self.metrics(loss, numeric_loss, category_loss, out, categorical, true_ids, y, y_hat, weights, active)
        if len(y):
            # In the units the binned head predicts (z on the batch's scale: episodes take it from their support
            # rows): the model's squared error, and that of the column mean the batch carries, the best
            # predictor that reads only the context's targets. The model uses the features when the first
            # falls below the second.
            mean, std = batch.column_mean[cols[numeric]].double(), batch.column_std[cols[numeric]].double().clamp_min(1e-300)
            metrics["numeric_z_mse"] = float((((y_hat - y) / std) ** 2).mean())
            metrics["numeric_mean_z_mse"] = float((((y - mean) / std) ** 2).mean())
        return LossResult(
            loss=loss,
            metrics=metrics,
            numeric_pred=y_hat,
            numeric_true=y,
            numeric_column=[batch.column_names[c] for c in cols[numeric].tolist()],
        )

    def combine(self, task_losses: torch.Tensor, active: torch.Tensor, shared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task losses [T] -> (scalar loss, weights [T]) under the configured weighting."""
        if self.uncertainty is not None:
            return self.uncertainty(task_losses, active)
        if self.gradient_norm is not None or self.mgda is not None:
            gradients = self.task_gradients(task_losses, active, shared)
            if self.gradient_norm is not None:
                norms = None if gradients is None else gradients.norm(dim=-1)
                return self.gradient_norm(task_losses, active, norms)
            return self.mgda(task_losses, active, gradients)
        weights = active.to(task_losses.dtype)
        return (task_losses * weights).sum(), weights

    @staticmethod
    def task_gradients(task_losses: torch.Tensor, active: torch.Tensor, shared: torch.Tensor) -> torch.Tensor | None:
        """[T, numel(shared)] gradient of each active task's loss w.r.t. the shared representation (zeros for
        inactive tasks), or None when no graph is being built (evaluation)."""
        if not (torch.is_grad_enabled() and shared.requires_grad):
            return None
        rows = []
        for t in range(task_losses.shape[0]):
            if not bool(active[t]):
                rows.append(torch.zeros(shared.numel(), dtype=shared.dtype, device=shared.device))
                continue
            (grad,) = torch.autograd.grad(task_losses[t], shared, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros(shared.numel(), dtype=shared.dtype, device=shared.device) if grad is None else grad.reshape(-1))
        return torch.stack(rows).detach()

    def metrics(self, loss, numeric_loss, category_loss, out, categorical, true_ids, y, y_hat, weights, active) -> dict[str, float]:
        m: dict[str, float] = {"loss": float(loss.detach()), "numeric_targets": float(len(y)), "categorical_targets": float(int(categorical.sum()))}
        if len(y):
            name = "numeric_bit_loss" if out.bit_logits is not None else "numeric_binned_loss"
            m[name] = float(numeric_loss.detach().mean())
            relative = (y_hat - y).abs() / y.abs().clamp_min(1e-12)
            m["numeric_median_relative_error"] = float(relative.median())
        if bool(categorical.any()):
            m["categorical_loss"] = float(category_loss.detach().mean())
            predicted = out.category_logits[categorical].argmax(-1)
            m["categorical_accuracy"] = float((predicted == true_ids[categorical]).float().mean())
        if self.config.weighting in ("uncertainty", "gradient_norm", "mgda"):
            for name, w, on in zip(self.task_names, weights.tolist(), active.tolist()):
                if on:
                    m[f"weight_{name}"] = float(w)
        return m


def build_objective(model: "TableModel", model_config: ModelConfig, loss_config: LossConfig) -> PretrainingObjective:
    """The training module: the model plus the configured loss weighting.

    `model_config` must be the config the model was built from: the targets' bit code depends on it.
    """
    differing = sorted(k for k, v in asdict(model_config).items() if asdict(model.config).get(k) != v)
    if differing:
        raise ConfigError(
            f"build_objective: the model was built with a different model config (keys {differing} differ); "
            "pass the config the model was built from (load_pretrained(...).config for a checkpoint)"
        )
    loss_config.validate("loss")
    return PretrainingObjective(model, loss_config)
