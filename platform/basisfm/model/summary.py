"""Parameter counts: `count_parameters` and a one-screen `describe_model` table of where the parameters are."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe_model(model: nn.Module) -> str:
    """A small table: parameters per top-level component, the total, and the config's shape when it has one."""
    lines = []
    config = getattr(model, "config", None)
    if config is not None:
        lines.append(
            f"{type(model).__name__} architecture={config.architecture} head={config.regression_head} preset={config.preset} d_model={config.d_model} n_layers={config.n_layers} "
            f"n_heads={config.n_heads} n_basis={config.n_basis} numeric={config.numeric_encoding} "
            f"missing={config.missing} attention={config.attention}"
        )
    lines.append(f"{'component':<20}{'parameters':>14}")
    for name, child in model.named_children():
        lines.append(f"{name:<20}{count_parameters(child):>14,}")
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        lines.append(f"{'(own parameters)':<20}{own:>14,}")
    lines.append(f"{'total':<20}{count_parameters(model):>14,}")
    return "\n".join(lines)
