"""Warm start: a run's first weights from a consolidated checkpoint (`train.init_from`), optionally deepened.

Not resume: a warm start takes only the weights and the architecture; the optimizer, schedule and step start
fresh. The driver resolves `init_from` once (`resolve_warm_start`: a shipped name or a models:/ URI becomes a local
directory, and `model` becomes the checkpoint's own config, grown) so every rank and the final consolidation
build the same shape; each rank then loads the weights (`initial_model`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from basisfm.config import RunConfig, with_overrides
from basisfm.model.table_model import TableModel


def resolve_warm_start(config: RunConfig, tracking_uri: str | None = None) -> RunConfig:
    """`config` with `train.init_from` an absolute local directory and `model` the checkpoint's config (n_layers
    raised to `train.grow_layers`); unchanged when there is no warm start."""
    train = config.train
    if train.init_from is None:
        return config
    from basisfm.pretrained.checkpoints import resolve_checkpoint
    from basisfm.model.checkpoint import read_model_config

    directory = resolve_checkpoint(train.init_from, tracking_uri=tracking_uri).absolute()
    model = read_model_config(directory)
    if train.grow_layers is not None:
        from basisfm.errors import ConfigError

        if train.grow_layers < model.n_layers:
            raise ConfigError(f"config key 'train.grow_layers' is {train.grow_layers}, below the {model.n_layers} layers of "
                              f"the checkpoint {train.init_from!r}; growing never removes layers: raise it or leave it null")
        if train.grow_layers > model.n_layers:
            model = dataclasses.replace(model, n_layers=train.grow_layers, preset="custom")  # what grow_depth builds
    updates = {f"model.{name}": value for name, value in dataclasses.asdict(model).items()}
    updates["train.init_from"] = str(directory)
    return with_overrides(config, updates)


def initial_model(config: RunConfig) -> TableModel:
    """The model a run starts from: `config.model` from scratch, or the warm start (after `resolve_warm_start`)."""
    from basisfm.model import build_model

    train = config.train
    if train.init_from is None:
        return build_model(config.model)
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.model.grow import grow_depth

    model = load_pretrained(Path(train.init_from)).train()
    if train.grow_layers is not None:
        model = grow_depth(model, train.grow_layers)
    if dataclasses.asdict(model.config) != dataclasses.asdict(config.model):
        from basisfm.errors import ConfigError

        raise ConfigError(f"config key 'train.init_from' names {train.init_from!r}, whose model config differs from the "
                          "run's model section; pretrain() resolves it with resolve_warm_start before launching")
    return model
