"""Training checkpoints: DeepSpeed's sharded save/restore on every rank, and the consolidated safetensors model.

A Ray checkpoint directory holds `deepspeed/` (every rank's ZeRO shards, written by DeepSpeed with
torch.save — only ever read back by DeepSpeed itself to resume), `train_state.json` (step, MLflow run,
metric history) and, in the final one, `consolidated/` (`model.safetensors` + `config.json`): the only
thing anything loads after training.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from basisfm.config import DataConfig
from basisfm.corpus.manifest import atomic_write_text
from basisfm.errors import CheckpointError

SHARD_TAG = "deepspeed"
TRAIN_STATE_FILE = "train_state.json"
CONSOLIDATED_DIR = "consolidated"


@dataclass
class TrainState:
    """What a resumed run needs besides weights and optimizer state."""

    step: int  # optimizer steps completed
    mlflow_run_id: str | None = None
    # metric name -> [[step, value], ...]: the loss curves, kept across restarts for the final plot
    history: dict[str, list[list[float]]] = field(default_factory=dict)
    cells_seen: int = 0
    tables_seen: int = 0  # tables (episodes: tasks) this rank trained on, across restarts
    resumed_from: list[int] = field(default_factory=list)  # the step of each checkpoint this run restarted from

    def record(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.history.setdefault(name, []).append([int(step), float(value)])

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainState":
        return cls(**json.loads(text))


def save_sharded(engine, directory: str | Path, state: TrainState, rank: int) -> None:
    """Every rank writes its shard (a collective call); rank 0 also writes `train_state.json`."""
    directory = Path(directory)
    engine.save_checkpoint(str(directory), tag=SHARD_TAG)
    if rank == 0:
        atomic_write_text(directory / TRAIN_STATE_FILE, state.to_json())


def restore_sharded(engine, directory: str | Path) -> TrainState:
    """Load weights, optimizer and schedule state into `engine`; return the run's TrainState."""
    directory = Path(directory)
    state_file = directory / TRAIN_STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"training checkpoint {str(directory)!r} has no {TRAIN_STATE_FILE}; it was not written by "
                              "basisfm.train (or was cut short): start a new run name or delete that checkpoint")
    try:
        load_path, _ = engine.load_checkpoint(str(directory), tag=SHARD_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
    except RuntimeError as exc:
        if "state_dict" not in str(exc):
            raise
        raise CheckpointError(f"training checkpoint {str(directory)!r} does not fit the model this config builds "
                              f"({str(exc).splitlines()[-1].strip()[:300]}); the run name is being reused with another "
                              "model shape or code version: pick a new train.run_name, or delete the old run directory") from exc
    if load_path is None:
        raise CheckpointError(f"DeepSpeed found no shards under {str(directory / SHARD_TAG)!r}; the checkpoint is "
                              "incomplete: delete it so the run resumes from the one before")
    return TrainState.from_json(state_file.read_text())


def full_state_dict(engine) -> dict[str, torch.Tensor]:
    """The wrapped module's full fp32 weights on CPU. Collective under ZeRO-3: every rank must call it."""
    module = engine.module
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
    else:
        gather = contextlib.nullcontext()
    with gather:
        # Cloned inside the gather: ZeRO-3 frees the full tensors when the context exits.
        return {name: tensor.detach().float().cpu().clone() for name, tensor in module.state_dict().items()}


def consolidate(engine, model_config: Any, directory: str | Path, rank: int, model_attribute: str = "model", *,
                data: DataConfig | None = None) -> Path | None:
    """Write `model.safetensors` + `config.json` for the model inside the engine's objective (rank 0 writes).

    `data`: the run's data config. Its `text_top_k` and its `column_name_embedding` (with the projection file, copied
    in) are recorded, so fine-tuning and inference embed text and column names as training did.
    """
    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained, write_name_embedding

    data = data or DataConfig()

    state = full_state_dict(engine)
    if rank != 0:
        return None
    prefix = f"{model_attribute}."
    model_state = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
    if not model_state:
        raise CheckpointError(f"the training objective has no parameters under {model_attribute!r}; cannot consolidate")
    # A fresh fp32 model on CPU: the saved file is independent of the engine's device and precision.
    model = build_model(model_config)
    model.load_state_dict(model_state, strict=True)
    directory = Path(directory)
    save_pretrained(model, directory, text_top_k=data.text_top_k)
    write_name_embedding(directory, data.column_name_embedding, data.name_projection)
    return directory
