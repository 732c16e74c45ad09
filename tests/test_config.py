"""Typed configs: YAML + `--set` overrides, and errors that name the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from basisfm.config import RunConfig, flatten, from_dict, load_config, with_overrides
from basisfm.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    assert isinstance(load_config(path), RunConfig)


def test_overrides_are_typed_and_applied() -> None:
    config = load_config(CONFIGS / "tiny.yaml", ["data.token_budget=2048", "train.lr=3e-4", "model.attention=sampled"])
    assert config.data.token_budget == 2048
    assert config.train.lr == pytest.approx(3e-4)
    assert config.model.attention == "sampled"


def test_unknown_key_names_the_key_and_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"'data\.token_budjet'.*did you mean 'data\.token_budget'"):
        load_config(None, ["data.token_budjet=10"])


def test_unknown_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        from_dict({"modle": {"d_model": 8}})


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.steps=many", r"'train\.steps' must be an integer, got 'many'"),
        ("model.attention=flash", r"'model\.attention' must be one of"),
        ("loss.gamma=0.7", r"'loss\.gamma' must be in \[0, 0\.5\]"),
        ("train.use_gpu=maybe", r"'train\.use_gpu' must be true or false"),
        ("model.d_model=65", r"'model\.d_model' must be divisible by n_heads"),
    ],
)
def test_bad_values_name_the_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override] + (["model.preset=custom"] if override.startswith("model.d_model") else []))


def test_malformed_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["no-equals-sign"])


def test_presets_fill_shape_but_explicit_keys_win() -> None:
    small = from_dict({"model": {"preset": "small"}})
    assert (small.model.d_model, small.model.n_layers) == (256, 6)
    wider = from_dict({"model": {"preset": "small", "d_model": 512}})
    assert wider.model.d_model == 512 and wider.model.n_layers == 6


def test_with_overrides_validates_and_leaves_the_original_alone() -> None:
    base = load_config(None)
    changed = with_overrides(base, {"loss.gamma": 0.3, "model.preset": "small"})
    assert changed.loss.gamma == 0.3 and changed.model.d_model == 256
    assert base.loss.gamma != 0.3 and base.model.d_model == 64
    with pytest.raises(ConfigError):
        with_overrides(base, {"loss.gamma": 0.9})


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(load_config(None))
    assert flat["model.d_model"] == 64 and "train.zero_stage" in flat
