"""How a column's name becomes the vector the model reads: its sentence embedding, nothing, or a projection of it.

`data.column_name_embedding` picks one; `ColumnNameEmbedder` wraps the string embedder so cells keep their
sentence embeddings while names take the chosen form (the collating code asks it for `embed_column_names`).
numpy only: the data pipeline's collating actors import this, and must not pay for importing torch. The
projection is trained by `encoding.name_projection` (torch) and read here from its safetensors file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from basisfm.config import DataConfig
from basisfm.errors import ConfigError

# The projection file's tensors: y = normalise(x + x @ weight.T + bias), a residual map of the sentence space
# (a zero weight is the identity, so training starts from the sentence embedding).
PROJECTION_WEIGHT = "name_projection.weight"
PROJECTION_BIAS = "name_projection.bias"
PROJECTION_FORMAT = "basisfm.name_projection"


class StringEmbedding(Protocol):
    def embed(self, strings: Sequence[str]) -> np.ndarray: ...


def project_names(embeddings: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """[N, E] sentence embeddings -> [N, E] unit vectors in the contrastive name space."""
    x = np.asarray(embeddings, dtype=np.float32)
    y = x + x @ weight.T + bias
    return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@lru_cache(maxsize=8)
def read_projection(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(weight [E, E], bias [E]) float32 from a projection file; a bad file raises ConfigError naming it."""
    from safetensors import safe_open

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"name projection {path!r} does not exist; train one with python -m jobs.name_projection "
                          "or set data.column_name_embedding=sentence")
    with safe_open(str(file), framework="numpy") as f:
        keys = set(f.keys())
        if {PROJECTION_WEIGHT, PROJECTION_BIAS} - keys or (f.metadata() or {}).get("format") != PROJECTION_FORMAT:
            raise ConfigError(f"{path!r} is not a name projection (tensors {sorted(keys)}, metadata {f.metadata()}); "
                              "write it with basisfm.encoding.name_projection.save_projection")
        weight, bias = f.get_tensor(PROJECTION_WEIGHT), f.get_tensor(PROJECTION_BIAS)
    if weight.ndim != 2 or weight.shape[0] != weight.shape[1] or bias.shape != (weight.shape[0],):
        raise ConfigError(f"name projection {path!r} has weight {weight.shape} and bias {bias.shape}; "
                          "expected [E, E] and [E]")
    return weight.astype(np.float32), bias.astype(np.float32)


class ColumnNameEmbedder:
    """A string embedder whose `embed_column_names` gives names in the configured form; `embed` (cells,
    labels) passes through unchanged."""

    def __init__(self, strings: StringEmbedding, mode: str, projection: str | None = None):
        if mode not in ("sentence", "none", "contrastive"):
            raise ConfigError(f"column_name_embedding must be 'sentence', 'none' or 'contrastive', got {mode!r}")
        if mode == "contrastive" and not projection:
            raise ConfigError("column_name_embedding='contrastive' needs a name projection file (data.name_projection)")
        self.strings = strings
        self.mode = mode
        self.projection = read_projection(str(projection)) if mode == "contrastive" else None

    def embed(self, strings: Sequence[str]) -> np.ndarray:
        return self.strings.embed(strings)

    def embed_column_names(self, names: Sequence[str]) -> np.ndarray:
        sentence = np.asarray(self.strings.embed(list(names)), dtype=np.float32)
        if self.mode == "none":
            return np.zeros_like(sentence)
        if self.mode == "contrastive":
            return project_names(sentence, *self.projection)
        return sentence


def embed_column_names(embedder: StringEmbedding, names: Sequence[str]) -> np.ndarray:
    """[C, E] float32 name vectors: the embedder's own form of names when it has one, else sentence embeddings."""
    form = getattr(embedder, "embed_column_names", None)
    vectors = form(names) if form is not None else embedder.embed(list(names))
    return np.asarray(vectors, dtype=np.float32)


def name_embedder_for(data_config: DataConfig, embedder: StringEmbedding) -> StringEmbedding:
    """`embedder` as `data.column_name_embedding` asks: itself for sentence embeddings, else wrapped."""
    if data_config.column_name_embedding == "sentence" or isinstance(embedder, ColumnNameEmbedder):
        return embedder
    return ColumnNameEmbedder(embedder, data_config.column_name_embedding, data_config.name_projection)
