"""Consolidated checkpoints: `model.safetensors` + `config.json` (the ModelConfig and a format version). Never a pickle.

Loading validates everything before building anything: a missing file, unreadable JSON, an unknown or
invalid config key, or weights that do not fit the config raise CheckpointError naming the file and key.
The shapes config.json implies are computed on PyTorch's meta device (no memory) and compared with the
shapes the safetensors header declares before any tensor is read or any model allocated, so an absurd
config.json is refused in milliseconds. Weights holding NaN or infinity are refused, naming the tensor.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from basisfm.config import ModelConfig
from basisfm.errors import CheckpointError, ConfigError
from basisfm.model.basis_transformer import BasisTransformer
from basisfm.model.summary import count_parameters

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "basisfm.basis_transformer"
FORMAT_VERSION = 1


def save_pretrained(model: BasisTransformer, directory: str | Path) -> Path:
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


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> BasisTransformer:
    """The model saved by `save_pretrained`, in eval mode on `device`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {str(directory)!r} does not exist")
    config = read_model_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {str(directory)!r} has no {WEIGHTS_NAME}")
    declared = _declared_shapes(weights)
    with torch.device("meta"):  # shapes only: a config.json with d_model 16384 and 256 layers costs nothing here
        expected = {name: tuple(t.shape) for name, t in BasisTransformer(config).state_dict().items()}
    missing = sorted(set(expected) - set(declared))
    unexpected = sorted(set(declared) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match {CONFIG_NAME}: missing tensor(s) {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected tensor(s) {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, shape in expected.items():
        if declared[name] != shape:
            raise CheckpointError(f"{weights}: tensor {name!r} has shape {declared[name]}, {CONFIG_NAME} implies {shape}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc}); the file is damaged, re-export the checkpoint") from exc
    for name, tensor in state.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(f"{weights}: tensor {name!r} holds {bad} NaN or infinite value(s) of {tensor.numel()}; "
                                      "the weights are damaged or training diverged: use an earlier checkpoint")
    model = BasisTransformer(config)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _declared_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from the safetensors header alone (no tensor is read)."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc}); the file is damaged, re-export the checkpoint") from exc
