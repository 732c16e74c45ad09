"""The masked-cell pretraining objective: predict every hidden cell of every row, weight the tasks, one scalar out.

Numeric-like targets are learned as SMR bits, categorical ones by scoring the column's strings. Targets
are grouped into a fixed set of tasks (numeric / categorical, each split into `task_buckets` buckets of
hashed column names) so learned task weights keep one shape across tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from basisfm.config import LossConfig, ModelConfig
from basisfm.data.batch import TableBatch
from basisfm.errors import ConfigError
from basisfm.encoding.missing import stable_name_bucket
from basisfm.encoding.smr import sanitize
from basisfm.losses.smr_loss import adaptive_weight, smr_bit_loss
from basisfm.losses.weighting import GradientNormWeighting, MGDAWeighting, UncertaintyWeighting
from basisfm.model.basis_transformer import BasisTransformer


@dataclass
class LossResult:
    loss: torch.Tensor  # the scalar to backward
    metrics: dict[str, float]
    numeric_pred: torch.Tensor  # [N] float64 predictions at numeric targets (expected value under the bits)
    numeric_true: torch.Tensor  # [N] float64 their true values
    numeric_column: list[str]  # [N] the column each belongs to


class PretrainingObjective(nn.Module):
    """Holds the model and any learnable loss weights: the one module the trainer (and DeepSpeed) wraps."""

    def __init__(self, model: BasisTransformer, loss_config: LossConfig):
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
        values, missing = sanitize(batch.values, batch.missing)
        values, missing = values[rows, cols], missing[rows, cols]
        true_ids = batch.string_ids[rows, cols]
        numeric = out.is_numeric & ~missing
        categorical = ~out.is_numeric & (true_ids >= 0)

        # Per-target losses (zero where a target belongs to the other kind or has no truth).
        codec = self.model.codec
        y = values[numeric]
        top, low = out.window_top[numeric], out.window_low[numeric]
        target_bits, _ = codec.encode(y, top, low)
        bit_loss = smr_bit_loss(out.bit_logits[numeric], target_bits)
        # The prediction is the expected value under the bit probabilities (the read-out predict_numeric
        # uses); it feeds the paper's reweighting and the R2 the trainer reports, never the gradient.
        with torch.no_grad():
            y_hat = codec.expected_value(torch.sigmoid(out.bit_logits[numeric].double()), top, low)
        if self.config.weighting == "paper":
            bit_loss = bit_loss * adaptive_weight(y, y_hat, self.config.gamma, self.config.eps).to(bit_loss.dtype)
        category_loss = F.cross_entropy(out.category_logits[categorical], true_ids[categorical], reduction="none")
        # Losses are summed in float32 even when the model runs in bf16/fp16 (DeepSpeed), for a stable scale.
        per_target = torch.zeros(len(rows), dtype=torch.float32, device=out.bit_logits.device)
        per_target = per_target.masked_scatter(numeric, bit_loss.float()).masked_scatter(categorical, category_loss.float())

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
            loss = out.bit_logits.sum() * 0.0 + out.basis.sum() * 0.0

        metrics = self.metrics(loss, bit_loss, category_loss, out, categorical, true_ids, y, y_hat, weights, active)
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

    def metrics(self, loss, bit_loss, category_loss, out, categorical, true_ids, y, y_hat, weights, active) -> dict[str, float]:
        m: dict[str, float] = {"loss": float(loss.detach()), "numeric_targets": float(len(y)), "categorical_targets": float(int(categorical.sum()))}
        if len(y):
            m["numeric_bit_loss"] = float(bit_loss.detach().mean())
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


def build_objective(model: BasisTransformer, model_config: ModelConfig, loss_config: LossConfig) -> PretrainingObjective:
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
