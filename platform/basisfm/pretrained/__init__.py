"""Checkpoints shipped with the package, what the estimators' `checkpoint="default"` starts from:
  - `in_context`: an in-context model (tab2d), which `strategy="inference"` predicts with (no gradient step)
    and `BasisRegressor` fine-tunes (`base-ft`, `peft`) on a table's episodes;
  - `default` (also named `per_row`): the per-row Basis Transformer, which `BasisClassifier` fine-tunes.

    from basisfm.pretrained import DEFAULT_CHECKPOINT_DIR, read_provenance
    read_provenance()  # how the default was made: config, corpus fingerprint, steps, hardware, MLflow run, evidence
    read_provenance("in_context")

Each checkpoint directory holds `model.safetensors` + `config.json` (what every basisfm checkpoint holds,
loaded without unpickling) and `provenance.json`, written by `python -m jobs.ship_checkpoint`, which also
refuses a checkpoint over `MAX_SHIPPED_BYTES`. A checkpoint is shipped only with evidence that it beats
the alternative on the public suite (the `evidence` entry of its provenance): fine-tuning from `default`
beats fine-tuning from scratch; `in_context` predicts in context, with no gradient step, where a model
pretrained without its curriculum stays at the context mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from basisfm.errors import CheckpointError

DEFAULT_NAME = "default"  # the per-row checkpoint's directory; as the estimators' `checkpoint`, their default
PER_ROW_NAME = "per_row"  # the per-row checkpoint by what it is, for an estimator whose default is another one
IN_CONTEXT_NAME = "in_context"  # what checkpoint="default" means for strategy="inference" and for BasisRegressor
SHIPPED_NAMES = (DEFAULT_NAME, IN_CONTEXT_NAME)  # the shipped directories
_ALIASES = {PER_ROW_NAME: DEFAULT_NAME}
CHECKPOINT_NAMES = (*SHIPPED_NAMES, *_ALIASES)  # every name `shipped_checkpoint` takes
PRETRAINED_DIR = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT_DIR = PRETRAINED_DIR / DEFAULT_NAME
IN_CONTEXT_CHECKPOINT_DIR = PRETRAINED_DIR / IN_CONTEXT_NAME
PROVENANCE_NAME = "provenance.json"
MAX_SHIPPED_BYTES = 5 * 1024 * 1024  # what a package may carry: weights, config and provenance together


def shipped_checkpoint(name: str = DEFAULT_NAME) -> Path:
    """The directory of the shipped checkpoint `name` ("per_row" names "default"); `CheckpointError` when the
    installed package lacks it."""
    name = _ALIASES.get(name, name)
    if name not in SHIPPED_NAMES:
        raise CheckpointError(f"basisfm ships the checkpoints {list(SHIPPED_NAMES)} ('{PER_ROW_NAME}' names "
                              f"'{DEFAULT_NAME}'); got {name!r}")
    directory = PRETRAINED_DIR / name
    if not (directory / "model.safetensors").is_file():
        raise CheckpointError(f"the installed basisfm has no shipped checkpoint at {str(directory)!r} (a "
                              "build without package data?); reinstall basisfm, or pass checkpoint=DIR, a "
                              "models:/name@alias URI, or None to start from scratch")
    return directory


def read_provenance(name: str = DEFAULT_NAME) -> dict[str, Any]:
    """The shipped checkpoint's provenance.json: how it was made and the evidence that it helps."""
    path = shipped_checkpoint(name) / PROVENANCE_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the shipped checkpoint's provenance ({type(exc).__name__})") from None
