"""The Basis Transformer and its parts: `build_model(model_config)`, parameter summaries, checkpoint io."""

from __future__ import annotations

from basisfm.config import ModelConfig
from basisfm.model.basis_transformer import BasisTransformer, ModelOutput
from basisfm.model.summary import count_parameters, describe_model


def build_model(model_config: ModelConfig) -> BasisTransformer:
    """A freshly initialised model of the config's shape (presets are resolved when the config is loaded)."""
    model_config.validate("model")
    return BasisTransformer(model_config)


__all__ = ["BasisTransformer", "ModelOutput", "build_model", "count_parameters", "describe_model"]
