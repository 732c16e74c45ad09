"""Named search spaces: pure functions from the typed run config to Ray Tune domains over dotted config keys.

A sample drawn from a space is a flat dict such as `{"loss.weighting": "mgda", "loss.gamma": 0.2}`;
`trial_config` turns it into a validated `RunConfig` through `basisfm.config.with_overrides`, so a
space can never produce a trial whose config the rest of basisfm would reject.
"""

from __future__ import annotations

import itertools
import math
import typing
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.search.sample import Categorical, Domain, Float, Integer

from basisfm.config import MIN_TEXT_TOP_K, DataConfig, NumericEncoding, RunConfig, with_overrides
from basisfm.errors import ConfigError

# The paper's reweighting and the three multi-task baselines the research plan compares it with.
LOSS_WEIGHTING_METHODS = ["paper", "uncertainty", "gradient_norm", "mgda"]
ATTENTION_VARIANTS = ["dense", "block_sparse", "sampled"]
# Every width the architecture space offers is a multiple of 8, so each of these head counts divides it:
# any (d_model, n_heads) pair Optuna proposes is valid, and no trial is wasted on a rejected shape.
HEAD_COUNTS = [2, 4, 8]
_WIDTH_MULTIPLE = math.lcm(*HEAD_COUNTS)
_SHAPE_KEYS = ("model.d_model", "model.n_layers", "model.n_heads", "model.n_basis")

SearchSpace = dict[str, Domain]


def loss_weighting_space(config: RunConfig) -> SearchSpace:
    """How the masked-cell objective's tasks are weighted, and the paper's floor γ.

    The paper's per-target reweighting (and so γ) acts on the SMR-bit loss only: under the binned head
    "paper" weighs tasks as "none" does and γ changes nothing, so neither is searched there.
    """
    if config.model.regression_head != "smr_bits":
        return {"loss.weighting": tune.choice([m for m in LOSS_WEIGHTING_METHODS if m != "paper"] + ["none"])}
    return {
        "loss.weighting": tune.choice(LOSS_WEIGHTING_METHODS),
        "loss.gamma": tune.uniform(0.0, 0.5),
    }


def sparsity_space(config: RunConfig) -> SearchSpace:
    """Attention variant and its knobs, plus how many words of a long text cell the data layer keeps."""
    # Around the configured pruning (or the default when the config embeds text whole); the data layer
    # rejects fewer than MIN_TEXT_TOP_K words.
    base_top_k = config.data.text_top_k or DataConfig.text_top_k
    top_ks = {max(MIN_TEXT_TOP_K, base_top_k // 4), max(MIN_TEXT_TOP_K, base_top_k // 2), base_top_k, base_top_k * 2}
    return {
        "model.attention": tune.choice(ATTENTION_VARIANTS),
        "model.block_size": tune.choice([4, 8, 16, 32]),
        "model.keep_ratio": tune.uniform(0.25, 1.0),
        "data.text_top_k": tune.choice(sorted(top_ks)),
    }


def architecture_space(config: RunConfig) -> SearchSpace:
    """Width, depth, heads and basis queries around the configured model, and the numeric encoding.

    Scaling around the config (half, same, double) keeps one space useful for the tiny CPU model and
    for the GPU presets alike.
    """
    model = config.model
    widths = sorted({_round_width(model.d_model // 2), _round_width(model.d_model), _round_width(model.d_model * 2)})
    depths = sorted({max(1, model.n_layers // 2), model.n_layers, model.n_layers * 2})
    basis = sorted({max(1, model.n_basis // 2), model.n_basis, model.n_basis * 2})
    return {
        "model.d_model": tune.choice(widths),
        "model.n_layers": tune.choice(depths),
        "model.n_heads": tune.choice(HEAD_COUNTS),
        "model.n_basis": tune.choice(basis),
        "model.numeric_encoding": tune.choice(list(typing.get_args(NumericEncoding))),
    }


def priors_space(config: RunConfig) -> SearchSpace:
    """How much of training is synthetic (`data.prior_fraction`, 0 = real only) and what the prior makes:
    the MLP / tree mix, targets, categorical and missing columns, graph depth and noise, names, curriculum.

    `priors.mlp_weight` stays above 0, so the two generator weights never sum to 0; depth choices stay at
    or above the configured `priors.min_layers`.
    """
    priors = config.priors
    depths = sorted({max(priors.min_layers, priors.max_layers // 2), priors.max_layers, priors.max_layers * 2})
    return {
        "data.prior_fraction": tune.uniform(0.0, 1.0),
        "priors.mlp_weight": tune.uniform(0.1, 1.0),
        "priors.tree_weight": tune.uniform(0.0, 1.0),
        "priors.classification_fraction": tune.uniform(0.0, 0.6),
        "priors.max_categorical_fraction": tune.uniform(0.0, 0.8),
        "priors.missing_task_fraction": tune.uniform(0.0, 0.6),
        "priors.max_layers": tune.choice(depths),
        "priors.max_noise_std": tune.loguniform(0.01, 1.0),
        "priors.curriculum": tune.choice(["none", "linear"]),
    }


SEARCH_SPACES: dict[str, Callable[[RunConfig], SearchSpace]] = {
    "loss_weighting": loss_weighting_space,
    "sparsity": sparsity_space,
    "architecture": architecture_space,
    "priors": priors_space,
}


def search_space(config: RunConfig) -> SearchSpace:
    """The space `config.tune.space` names, built over `config`."""
    name = config.tune.space
    if name not in SEARCH_SPACES:
        raise ConfigError(f"config key 'tune.space' must be one of {sorted(SEARCH_SPACES)}, got {name!r}")
    return SEARCH_SPACES[name](config)


def trial_config(base: RunConfig, sample: dict[str, Any]) -> RunConfig:
    """The validated run config of one trial: `base` with the sampled dotted keys applied.

    A sample that changes the model's shape switches the preset to `custom`, so the saved
    `config.json` describes the trained model instead of claiming the base preset.
    """
    updates = {key: _plain(value) for key, value in sample.items()}
    if any(key in updates for key in _SHAPE_KEYS):
        updates["model.preset"] = "custom"
    return with_overrides(base, updates)


def check_space(base: RunConfig, space: SearchSpace) -> int:
    """Validate every corner of `space` against `base` before any trial starts; returns how many were checked.

    Categorical keys are enumerated in full and numeric ranges at both ends, so a space that could
    propose a config basisfm rejects fails here, naming the combination, instead of inside a trial.
    """
    keys = list(space)
    corners = [_corner_values(key, space[key]) for key in keys]
    checked = 0
    for combo in itertools.product(*corners):
        sample = dict(zip(keys, combo))
        try:
            trial_config(base, sample)
        except ConfigError as exc:
            raise ConfigError(f"search space {base.tune.space!r} can propose {sample}, which is invalid: {exc}") from exc
        checked += 1
    return checked


def _corner_values(key: str, domain: Any) -> list[Any]:
    if isinstance(domain, Categorical):
        return list(domain.categories)
    if isinstance(domain, Integer):
        return [domain.lower, domain.upper - 1]  # Tune's integer upper bound is exclusive
    if isinstance(domain, Float):
        return [domain.lower, domain.upper]
    if isinstance(domain, Domain):
        raise ConfigError(f"search space key {key!r} uses a {type(domain).__name__} domain that cannot be checked")
    return [domain]  # a constant


def _round_width(width: int) -> int:
    return max(_WIDTH_MULTIPLE, int(round(width / _WIDTH_MULTIPLE)) * _WIDTH_MULTIPLE)


def _plain(value: Any) -> Any:
    # Optuna and Tune hand back numpy scalars; the config's type checks want Python numbers.
    item = getattr(value, "item", None)
    return item() if callable(item) else value
