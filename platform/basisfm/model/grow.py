"""Deepen a trained model without changing what it computes (progressive stacking).

A small model pretrained for a while is cheaper to deepen than a deep one is to train from scratch
(Gong et al. 2019, "Efficient training of BERT by progressively stacking"; Net2Net, Chen et al. 2016).
`grow_depth` builds the same architecture with `n_layers` layers: each trained layer keeps its place and
is followed by copies of itself whose residual branches are switched off (the attention's and the
feed-forward's output projections zeroed), so every copy starts as the identity and the grown model's
predictions equal the original's. Training then moves the copies away from zero (their output projections
get gradients at once) and the extra depth is used.

Layers here are the ModuleLists of length `config.n_layers` (tab2d's along-row and along-column blocks,
basis_icl's row blocks, the per-row model's blocks); all are pre-norm residual `Block`s.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from basisfm.errors import ConfigError
from basisfm.model.attention import Block, CellAttention
from basisfm.model.table_model import TableModel


def _layer_lists(model: nn.Module, n_layers: int) -> dict[str, nn.ModuleList]:
    return {name: module for name, module in model.named_modules()
            if isinstance(module, nn.ModuleList) and len(module) == n_layers and name != "cell_layers"}


def _residual_block(layer: nn.Module) -> Block:
    block = layer.block if isinstance(layer, CellAttention) else layer
    if not isinstance(block, Block):
        raise ConfigError(f"grow_depth: layer {type(layer).__name__} is not a residual Block; cannot deepen it")
    return block


def source_layer(new_index: int, old_layers: int, new_layers: int) -> int:
    """The trained layer that new layer `new_index` is copied from: layers stay in order, each repeated."""
    return new_index * old_layers // new_layers


def grow_depth(model: TableModel, n_layers: int) -> TableModel:
    """A copy of `model` with `n_layers` layers that computes the same function (see the module docstring)."""
    from basisfm.model import build_model

    old = model.config.n_layers
    if n_layers < old:
        raise ConfigError(f"grow_depth: n_layers {n_layers} is below the model's {old}; growing never removes layers")
    if n_layers == old:
        return model
    config = dataclasses.replace(model.config, n_layers=n_layers, preset="custom")
    config.validate("model")
    grown = build_model(config).to(next(model.parameters()).device)
    state = model.state_dict()
    old_lists = _layer_lists(model, old)
    new_state = {}
    for name in grown.state_dict():
        prefix = next((p for p in old_lists if name.startswith(p + ".")), None)
        if prefix is None:
            new_state[name] = state[name]
            continue
        index, rest = name[len(prefix) + 1:].split(".", 1)
        new_state[name] = state[f"{prefix}.{source_layer(int(index), old, n_layers)}.{rest}"]
    grown.load_state_dict(new_state, strict=True)
    with torch.no_grad():
        for prefix in old_lists:
            layers = grown.get_submodule(prefix)
            for index, layer in enumerate(layers):
                first_copy = index == 0 or source_layer(index - 1, old, n_layers) != source_layer(index, old, n_layers)
                if first_copy:
                    continue  # the trained layer itself
                block = _residual_block(layer)
                for projection in (block.attention.out, block.feed_forward.net[2]):
                    projection.weight.zero_()
                    projection.bias.zero_()
    return grown.train(model.training)
