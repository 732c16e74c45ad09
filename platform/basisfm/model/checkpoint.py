"""Consolidated checkpoints: `model.safetensors` + `config.json` (the ModelConfig, how its text was embedded,
and a format version). Never a pickle.

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

from basisfm.config import DataConfig, ModelConfig
from basisfm.errors import CheckpointError, ConfigError
from basisfm.model.table_model import ADDED_FRESH_PARAMETERS, ADDED_ZERO_PARAMETERS, TableModel
from basisfm.model.summary import count_parameters

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "basisfm.basis_transformer"
FORMAT_VERSION = 1
PROJECTION_NAME = "name_projection.safetensors"  # a contrastive name projection the checkpoint's model reads
# ModelConfig keys older checkpoints hold that no longer exist and never changed the model: dropped on read.
# `text_top_k`: text pruning is the data layer's (`data.text_top_k`); the model key was read by nothing.
RETIRED_MODEL_KEYS = frozenset({"text_top_k"})
# ModelConfig keys added after checkpoints were written without them, with the value that rebuilds those
# checkpoints' models (a new key's default is the new model; an older checkpoint lacks its weights).
PREDATING_MODEL_KEYS = {"icl_column_identity": False}


def save_pretrained(model: TableModel, directory: str | Path, *,
                    text_top_k: int | None = DataConfig.text_top_k) -> Path:
    """Write the model's weights and config into `directory` (created if needed); returns the directory.

    `text_top_k` is the `data.text_top_k` the model was trained with: whoever embeds text for this model
    later (fine-tuning, inference) must prune it the same way, or it sees text it never saw in training.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": dataclasses.asdict(model.config),
        "data": {"text_top_k": text_top_k},
        "parameter_count": count_parameters(model),
    }
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def read_model_config(directory: str | Path) -> ModelConfig:
    """The validated ModelConfig stored in a checkpoint directory's config.json."""
    path, raw = _read_config_json(directory)
    stored = raw.get("model_config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: key 'model_config' is missing or not a mapping")
    stored = {**PREDATING_MODEL_KEYS, **{key: value for key, value in stored.items() if key not in RETIRED_MODEL_KEYS}}
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


def read_text_top_k(directory: str | Path) -> int | None:
    """The `data.text_top_k` the checkpoint's model was trained with (None: text embedded whole).

    Checkpoints written before config.json recorded it were all pretrained with the default.
    """
    path, raw = _read_config_json(directory)
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: key 'data' must be a mapping, got {data!r}")
    top_k = data.get("text_top_k", DataConfig.text_top_k)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise CheckpointError(f"{path}: key 'data.text_top_k' must be an integer or null, got {top_k!r}")
    try:
        DataConfig(text_top_k=top_k).validate("data")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: invalid data.text_top_k ({exc})") from exc
    return top_k


def read_name_embedding(directory: str | Path) -> tuple[str, str | None]:
    """(`data.column_name_embedding`, the projection file's path or None) the checkpoint's model was trained with.

    Checkpoints that do not record it read sentence embeddings of names, as every model before it did.
    """
    path, raw = _read_config_json(directory)
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: key 'data' must be a mapping, got {data!r}")
    mode = data.get("column_name_embedding", "sentence")
    projection = data.get("name_projection")
    if projection is not None:
        if not isinstance(projection, str) or Path(projection).name != projection:
            raise CheckpointError(f"{path}: key 'data.name_projection' must be a file name inside the checkpoint "
                                  f"directory, got {projection!r}")
        projection = str(Path(directory) / projection)
    try:
        DataConfig(column_name_embedding=mode, name_projection=projection).validate("data")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: invalid data.column_name_embedding ({exc})") from exc
    if mode not in ("sentence", "none", "contrastive"):
        raise CheckpointError(f"{path}: key 'data.column_name_embedding' must be 'sentence', 'none' or 'contrastive', "
                              f"got {mode!r}")
    return mode, projection


def write_name_embedding(directory: str | Path, mode: str, projection: str | Path | None = None) -> None:
    """Record in the checkpoint how its model reads column names (`data.column_name_embedding`); a projection
    file is copied into the directory, so the checkpoint stays whole when moved."""
    import shutil

    path, raw = _read_config_json(directory)
    if mode not in ("sentence", "none", "contrastive"):
        raise ConfigError(f"column_name_embedding must be 'sentence', 'none' or 'contrastive', got {mode!r}")
    DataConfig(column_name_embedding=mode, name_projection=None if projection is None else str(projection)).validate("data")
    data = dict(raw.get("data") or {})
    data["column_name_embedding"] = mode
    data.pop("name_projection", None)
    if projection is not None:
        target = Path(directory) / PROJECTION_NAME
        if Path(projection).resolve() != target.resolve():
            shutil.copyfile(projection, target)
        data["name_projection"] = PROJECTION_NAME
    raw["data"] = data
    path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def find_checkpoint_dir(root: str | Path, origin: str) -> Path:
    """`root` itself, or the one directory below it (a downloaded MLflow model, a run directory) that holds
    both checkpoint files; `origin` names what the user asked for in the error."""
    root = Path(root)
    candidates = [root] if (root / WEIGHTS_NAME).is_file() else [p.parent for p in sorted(root.rglob(WEIGHTS_NAME))]
    complete = [d for d in candidates if (d / CONFIG_NAME).is_file()]
    if not complete:
        missing = CONFIG_NAME if candidates else WEIGHTS_NAME
        raise CheckpointError(f"checkpoint {origin!r} has no {missing} (looked in {str(root)!r}); "
                              f"a consolidated checkpoint needs both {WEIGHTS_NAME} and {CONFIG_NAME}")
    if len(complete) > 1:
        raise CheckpointError(f"checkpoint {origin!r} holds {len(complete)} checkpoint directories "
                              f"({[str(d) for d in complete[:3]]}); point at one of them")
    return complete[0]


def _read_config_json(directory: str | Path) -> tuple[Path, dict]:
    """config.json of a checkpoint directory, its format and version checked."""
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
    return path, raw


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> TableModel:
    """The model saved by `save_pretrained`, in eval mode on `device`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {str(directory)!r} does not exist")
    config = read_model_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {str(directory)!r} has no {WEIGHTS_NAME}")
    from basisfm.model import build_model

    declared = _upgrade_names(_declared_shapes(weights))
    with torch.device("meta"):  # shapes only: a config.json with d_model 16384 and 256 layers costs nothing here
        expected = {name: tuple(t.shape) for name, t in build_model(config).state_dict().items()}
    if not any(name in declared for name in ADDED_FRESH_PARAMETERS + ADDED_ZERO_PARAMETERS):
        # written before the scale paths existed: `upgrade_state` fills them in below
        declared.update({name: expected[name] for name in ADDED_FRESH_PARAMETERS + ADDED_ZERO_PARAMETERS if name in expected})
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
    model = build_model(config)
    model.load_state_dict(upgrade_state(state, model.state_dict()), strict=True)
    return model.to(device).eval()


def _declared_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from the safetensors header alone (no tensor is read)."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc}); the file is damaged, re-export the checkpoint") from exc


# Head parameters moved into `heads` (model.heads, shared by every architecture) after the first checkpoints.
_RENAMED_PREFIXES = {"bit_head.": "heads.bit_head.", "bit_prior.": "heads.bit_prior.", "category_head.": "heads.category_head."}


def upgrade_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict written before the shared heads and the scale features, in today's names.

    Renames the head tensors; parameters added since (`table_model.ADDED_*`) get zeros for the output
    layers of the new paths and fresh values elsewhere, so the old model predicts exactly as it did.
    A current state dict passes through unchanged.
    """
    upgraded = _upgrade_names(state)
    if any(name in upgraded for name in ADDED_FRESH_PARAMETERS + ADDED_ZERO_PARAMETERS):
        return upgraded
    for name in ADDED_ZERO_PARAMETERS:
        if name in expected:
            upgraded[name] = torch.zeros_like(expected[name])
    for name in ADDED_FRESH_PARAMETERS:
        if name in expected:
            upgraded[name] = expected[name].detach().clone()
    return upgraded


def _upgrade_names(named: dict) -> dict:
    """The same mapping with head names from before the shared heads renamed to today's."""
    upgraded = {}
    for name, value in named.items():
        for old, new in _RENAMED_PREFIXES.items():
            if name.startswith(old):
                name = new + name[len(old):]
                break
        upgraded[name] = value
    return upgraded
