"""Checkpoints shipped with the package, what the estimators' `checkpoint="default"` starts from:
  - `in_context`: an in-context model (tab2d), which `strategy="inference"` predicts with (no gradient step)
    and `BasisRegressor` fine-tunes (`base-ft`, `peft`) on a table's episodes;
  - `per_row` (also named `default`, its folder's earlier name): the per-row Basis Transformer, which
    `BasisClassifier` fine-tunes;
  - `basis_icl`: the paper's in-context architecture (cells, basis compression of each row, attention across row
    tokens), pretrained by the same curriculum through `jobs.pretrain`; chosen by name (`checkpoint="basis_icl"`),
    4-5x faster in context than `in_context` and below it on both regression suites.

    from basisfm.pretrained import PER_ROW_CHECKPOINT_DIR, read_provenance
    read_provenance()  # how the per-row one was made: config, corpus fingerprint, steps, hardware, MLflow run, evidence
    read_provenance("in_context")

Each checkpoint directory holds `model.safetensors` + `config.json` (what every basisfm checkpoint holds,
loaded without unpickling) and `provenance.json`, written by `python -m jobs.ship_checkpoint`, which also
refuses a checkpoint over `MAX_SHIPPED_BYTES`. A checkpoint is shipped only with evidence that it beats
the alternative on the public suite (the `evidence` entry of its provenance): fine-tuning from `per_row`
beats fine-tuning from scratch; `in_context` predicts in context, with no gradient step, where a model
pretrained without its curriculum stays at the context mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from basisfm.errors import CheckpointError

PER_ROW_NAME = "per_row"  # the per-row checkpoint's directory
IN_CONTEXT_NAME = "in_context"  # the in-context checkpoint's directory
BASIS_ICL_NAME = "basis_icl"  # the paper's in-context architecture, pretrained by the same curriculum (by name only)
# The estimators' default `checkpoint`: the shipped checkpoint made for the strategy and task (`estimators.strategies`).
# Given to `shipped_checkpoint` itself it names the per-row one, the folder's name until it said what it holds
# (saved estimators and scripts may still pass it).
DEFAULT_NAME = "default"
SHIPPED_NAMES = (PER_ROW_NAME, IN_CONTEXT_NAME, BASIS_ICL_NAME)  # the shipped directories
ALIASES = {DEFAULT_NAME: PER_ROW_NAME}
CHECKPOINT_NAMES = (*SHIPPED_NAMES, *ALIASES)  # every name `shipped_checkpoint` takes
PRETRAINED_DIR = Path(__file__).resolve().parent
PER_ROW_CHECKPOINT_DIR = PRETRAINED_DIR / PER_ROW_NAME
IN_CONTEXT_CHECKPOINT_DIR = PRETRAINED_DIR / IN_CONTEXT_NAME
PROVENANCE_NAME = "provenance.json"
MAX_SHIPPED_BYTES = 5 * 1024 * 1024  # what a package may carry: weights, config and provenance together


def shipped_checkpoint(name: str = PER_ROW_NAME) -> Path:
    """The directory of the shipped checkpoint `name` ("default" names "per_row"); `CheckpointError` when the
    installed package lacks it."""
    name = ALIASES.get(name, name)
    if name not in SHIPPED_NAMES:
        raise CheckpointError(f"basisfm ships the checkpoints {list(SHIPPED_NAMES)} ('{DEFAULT_NAME}' names "
                              f"'{PER_ROW_NAME}'); got {name!r}")
    directory = PRETRAINED_DIR / name
    if not (directory / "model.safetensors").is_file():
        raise CheckpointError(f"the installed basisfm has no shipped checkpoint at {str(directory)!r} (a "
                              "build without package data?); reinstall basisfm, or pass checkpoint=DIR, a "
                              "models:/name@alias URI, or None to start from scratch")
    return directory


def read_provenance(name: str = PER_ROW_NAME) -> dict[str, Any]:
    """The shipped checkpoint's provenance.json: how it was made and the evidence that it helps."""
    path = shipped_checkpoint(name) / PROVENANCE_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the shipped checkpoint's provenance ({type(exc).__name__})") from None
