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


__all__ = ["BasisTransformer", "ModelOutput", "TableModel", "build_model", "count_parameters", "reads_context", "describe_model"]
