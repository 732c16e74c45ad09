"""The architectures and their parts: `build_model(model_config)`, parameter summaries, checkpoint io.

`model.architecture` picks the architecture: `basis` (the paper's per-row Basis Transformer), `basis_icl`
(per-row basis compression, then attention across a table's rows: queries read labelled support rows)
and `tab2d` (Mitra-style attention alternating along rows and columns of the cell grid). All share cell
tokens, heads and the inference API (`TableModel`) and return the same `ModelOutput`.
"""

from __future__ import annotations

from basisfm.config import ModelConfig
from basisfm.errors import ConfigError
from basisfm.model.basis_transformer import BasisTransformer
from basisfm.model.summary import count_parameters, describe_model
from basisfm.model.table_model import ModelOutput, TableModel


def build_model(model_config: ModelConfig) -> TableModel:
    """A freshly initialised model of the config's architecture and shape (presets are resolved when the config is loaded)."""
    model_config.validate("model")
    architecture = model_config.architecture
    if architecture == "basis":
        return BasisTransformer(model_config)
    if architecture == "basis_icl":
        from basisfm.model.basis_icl import BasisICL

        return BasisICL(model_config)
    if architecture == "tab2d":
        from basisfm.model.tab2d import Tab2D

        return Tab2D(model_config)
    raise ConfigError(f"config key 'model.architecture': unknown architecture {architecture!r}; choose basis, basis_icl or tab2d")


def reads_context(model) -> bool:
    """Whether `model` (or the model inside a peft wrapper) predicts from a table's labelled rows: every
    architecture but the per-row `basis` model."""
    return getattr(getattr(model, "config", None), "architecture", "basis") != "basis"


# Query rows one in-context episode may carry when its queries read the support rows alone, as keys (basis_icl): the
# cost then grows with queries x support rows, so thousands fit at once where tab2d (every row of an episode in each
# column's attention) reads 128 at a time (`InContextSettings.query_batch`).
QUERIES_READING_SUPPORT_ONLY = 2048


def query_rows_per_episode(model, query_batch: int) -> int:
    """Query rows per in-context episode for `model` (or the model inside a peft wrapper): `query_batch` (the
    settings'), or `QUERIES_READING_SUPPORT_ONLY` for basis_icl, which reads the context once per 2,048 queries
    instead of once per 128 (2,000 queries from 10,000 rows: 3.3 s against 56.5 s,
    benchmarks/results/large_context_seconds.md). Predictions do not depend on it: queries never read each other."""
    architecture = getattr(getattr(model, "config", None), "architecture", "basis")
    return max(query_batch, QUERIES_READING_SUPPORT_ONLY) if architecture == "basis_icl" else query_batch


__all__ = ["BasisTransformer", "ModelOutput", "TableModel", "build_model", "count_parameters", "reads_context", "describe_model",
           "query_rows_per_episode", "QUERIES_READING_SUPPORT_ONLY"]
