"""basisfm.model.grow: a trained model deepened with identity copies predicts exactly as before, and the
copies then learn (their residual branches leave zero at the first step)."""

from __future__ import annotations

import pytest
import torch

from basisfm.config import LossConfig, ModelConfig
from basisfm.errors import ConfigError
from basisfm.losses import build_objective
from basisfm.model import build_model
from basisfm.model.grow import grow_depth, source_layer
from test_model_icl import linear_episode
from test_model_support import single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def _trained(architecture: str, **config) -> torch.nn.Module:
    """A model whose every weight is away from its initial value (as a trained one would be)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=architecture, regression_head="binned", n_bins=16, **config))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("architecture,attention", [("tab2d", "dense"), ("tab2d", "block_sparse"), ("basis_icl", "dense"),
                                                    ("basis", "dense")])
def test_a_grown_model_predicts_exactly_as_the_model_it_grew_from(architecture, attention):
    model = _trained(architecture, attention=attention, block_size=2)
    batch = linear_episode()
    grown = grow_depth(model, 5)
    assert grown.config.n_layers == 5 and grown.config.preset == "custom" and model.config.n_layers == 2
    assert not grown.training  # the mode it was given in
    before, after = model(batch), grown(batch)
    assert torch.allclose(after.value_logits, before.value_logits, atol=1e-5)
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in model.parameters())


def test_trained_layers_keep_their_place_and_copies_start_as_the_identity():
    model = _trained("tab2d")
    grown = grow_depth(model, 4)
    assert [source_layer(i, 2, 4) for i in range(4)] == [0, 0, 1, 1]
    assert [source_layer(i, 2, 3) for i in range(3)] == [0, 0, 1]
    for new, old in ((0, 0), (2, 1)):  # the trained layers, unchanged
        for (name, a), b in zip(grown.along_column[new].state_dict().items(), model.along_column[old].state_dict().values()):
            assert torch.equal(a, b), name
    for copy in (1, 3):  # copies: the trained layer's attention, outputs switched off
        block = grown.along_column[copy]
        assert torch.equal(block.attention.query.weight, model.along_column[copy // 2].attention.query.weight)
        assert block.attention.out.weight.abs().sum() == 0 and block.feed_forward.net[2].weight.abs().sum() == 0
        assert grown.along_row[copy].block.attention.out.weight.abs().sum() == 0


def test_the_copies_learn_after_one_step():
    grown = grow_depth(_trained("tab2d"), 4).train()
    objective = build_objective(grown, grown.config, LossConfig(weighting="none"))
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-2)
    objective(linear_episode()).loss.backward()
    optimizer.step()
    assert grown.along_column[1].attention.out.weight.abs().sum() > 0
    assert grown.along_row[3].block.feed_forward.net[2].weight.abs().sum() > 0


def test_growing_never_removes_layers():
    model = _trained("tab2d")
    assert grow_depth(model, 2) is model
    with pytest.raises(ConfigError, match="n_layers 1 is below the model's 2"):
        grow_depth(model, 1)
