"""Consolidated checkpoints: `model.safetensors` + `config.json` (the ModelConfig and a format version). Never a pickle.

Loading validates everything before building anything: a missing file, unreadable JSON, an unknown or
invalid config key, or weights that do not fit the config raise CheckpointError naming the file and key.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from basisfm.config import ModelConfig
from basisfm.errors import CheckpointError, ConfigError
from basisfm.model.table_model import ADDED_FRESH_PARAMETERS, ADDED_ZERO_PARAMETERS, TableModel
from basisfm.model.summary import count_parameters

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "basisfm.basis_transformer"
FORMAT_VERSION = 1


def save_pretrained(model: TableModel, directory: str | Path) -> Path:
    """Write the model's weights and config into `directory` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": dataclasses.asdict(model.config),
        "parameter_count": count_parameters(model),
    }
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def read_model_config(directory: str | Path) -> ModelConfig:
    """The validated ModelConfig stored in a checkpoint directory's config.json."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(directory)!r} has no {CONFIG_NAME}; is this a consolidated basisfm checkpoint?")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); the file is damaged, re-export the checkpoint") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: key 'format' must be {FORMAT!r}, got {raw.get('format') if isinstance(raw, dict) else raw!r}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: key 'format_version' is {raw.get('format_version')!r}, this basisfm reads version {FORMAT_VERSION}; "
            "use the basisfm release that wrote it"
        )
    stored = raw.get("model_config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: key 'model_config' is missing or not a mapping")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise CheckpointError(f"{path}: model_config has unknown key(s) {unknown}; it was written by a newer basisfm")
    try:
        config = ModelConfig(**stored)
        config.validate("model_config")
    except (TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: invalid model_config ({exc})") from exc
    return config


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> TableModel:
    """The model saved by `save_pretrained`, in eval mode on `device`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {str(directory)!r} does not exist")
    config = read_model_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {str(directory)!r} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc}); the file is damaged, re-export the checkpoint") from exc

    from basisfm.model import build_model

    model = build_model(config)
    expected = model.state_dict()
    state = upgrade_state(state, expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match {CONFIG_NAME}: missing tensor(s) {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected tensor(s) {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{weights}: tensor {name!r} has shape {tuple(state[name].shape)}, {CONFIG_NAME} implies {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


# Head parameters moved into `heads` (model.heads, shared by every architecture) after the first checkpoints.
_RENAMED_PREFIXES = {"bit_head.": "heads.bit_head.", "bit_prior.": "heads.bit_prior.", "category_head.": "heads.category_head."}


def upgrade_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict written before the shared heads and the scale features, in today's names.

    Renames the head tensors; parameters added since (`table_model.ADDED_*`) get zeros for the output
    layers of the new paths and fresh values elsewhere, so the old model predicts exactly as it did.
    A current state dict passes through unchanged.
    """
    upgraded = {}
    for name, tensor in state.items():
        for old, new in _RENAMED_PREFIXES.items():
            if name.startswith(old) and name not in expected:
                name = new + name[len(old):]
                break
        upgraded[name] = tensor
    if any(name in upgraded for name in ADDED_FRESH_PARAMETERS + ADDED_ZERO_PARAMETERS):
        return upgraded
    for name in ADDED_ZERO_PARAMETERS:
        if name in expected:
            upgraded[name] = torch.zeros_like(expected[name])
    for name in ADDED_FRESH_PARAMETERS:
        if name in expected:
            upgraded[name] = expected[name].detach().clone()
    return upgraded
