"""Search spaces, trial configs, concurrency from cluster resources, and the trials table: no Ray cluster needed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from ray.tune.search.sample import Categorical

from basisfm.config import load_config, with_overrides
from basisfm.errors import ConfigError
from basisfm.tune.resources import check_fits, max_concurrent_trials, trial_resources
from basisfm.tune.spaces import SEARCH_SPACES, _corner_values, check_space, search_space, trial_config
from basisfm.tune.trials_table import TrialRow, plot_trials, rank_trials, trials_markdown

TUNE_TINY = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "tune_tiny.yaml"


@pytest.fixture
def base():
    return load_config(TUNE_TINY)


def _draw(space, rng: random.Random) -> dict:
    # Each domain samples itself (as Tune's random search does); Optuna proposes from the same domains.
    return {key: domain.sample(random_state=rng.randint(0, 2**31 - 1)) for key, domain in space.items()}


@pytest.mark.parametrize("name", sorted(SEARCH_SPACES))
def test_every_sample_of_every_space_is_a_valid_run_config(base, name):
    config = with_overrides(base, {"tune.space": name})
    space = search_space(config)
    assert all(key.count(".") == 1 for key in space)  # dotted config keys, nothing else
    assert check_space(config, space) >= 2
    rng = random.Random(0)
    for _ in range(50):
        sample = _draw(space, rng)
        trial = trial_config(config, sample)
        for key, value in sample.items():
            section, field = key.split(".")
            assert getattr(getattr(trial, section), field) == pytest.approx(value)


def test_loss_weighting_space_covers_the_four_methods_and_gamma_range(base):
    bits = with_overrides(base, {"model.regression_head": "smr_bits"})
    space = search_space(bits)
    assert sorted(space["loss.weighting"].categories) == ["gradient_norm", "mgda", "paper", "uncertainty"]
    assert (space["loss.gamma"].lower, space["loss.gamma"].upper) == (0.0, 0.5)
    # the paper's reweighting acts on SMR bits only: under bins neither it nor gamma is searched
    binned = search_space(with_overrides(base, {"model.regression_head": "binned"}))
    assert "loss.gamma" not in binned and sorted(binned["loss.weighting"].categories) == \
        ["gradient_norm", "mgda", "none", "uncertainty"]


def test_architecture_space_only_offers_divisible_width_head_pairs_and_marks_shape_custom(base):
    config = with_overrides(base, {"tune.space": "architecture"})
    space = search_space(config)
    assert set(space) == {"model.d_model", "model.n_layers", "model.n_heads", "model.n_basis", "model.numeric_encoding"}
    for width in space["model.d_model"].categories:
        for heads in space["model.n_heads"].categories:
            assert width % heads == 0
    trial = trial_config(config, {"model.d_model": 128, "model.n_heads": 8, "model.n_layers": 1, "model.n_basis": 4,
                                  "model.numeric_encoding": "periodic"})
    # The preset would otherwise claim "tiny" while the saved config.json describes another shape.
    assert trial.model.preset == "custom" and trial.model.d_model == 128 and trial.model.n_layers == 1


def test_architecture_space_scales_with_the_base_model(base):
    small = with_overrides(base, {"model.preset": "small", "tune.space": "architecture"})
    widths = search_space(small)["model.d_model"].categories
    assert sorted(widths) == [128, 256, 512]


def test_sparsity_space_samples_attention_variants_and_their_knobs(base):
    space = search_space(with_overrides(base, {"tune.space": "sparsity"}))
    assert sorted(space["model.attention"].categories) == ["block_sparse", "dense", "sampled"]
    assert isinstance(space["data.text_top_k"], Categorical)
    assert min(space["data.text_top_k"].categories) >= 4  # the data layer's floor
    assert 0 < space["model.keep_ratio"].lower < space["model.keep_ratio"].upper <= 1.0


# A long text cell (60 distinct words) the data layer prunes differently for every searched text_top_k.
_LONG_TEXT = " ".join(f"word{i}" for i in range(60))


def _run_fingerprint(config, batch, tmp_path) -> tuple:
    """What a trial's config changes in the run: the model and objective built from it (their parameters,
    and the loss and gradient of one step on a fixed batch: the weighting acts through the gradient), the
    DeepSpeed config, and what the data layer's collating actor hands the sentence encoder. Two configs
    with equal fingerprints train the same run."""
    import dataclasses
    import json

    import torch

    from basisfm.data.pipeline import TableBatchCollator
    from basisfm.losses import build_objective
    from basisfm.model import build_model
    from basisfm.train.deepspeed_config import build_deepspeed_config

    torch.manual_seed(0)
    model = build_model(config.model)
    objective = build_objective(model, config.model, config.loss).eval()
    loss = objective(batch).loss
    loss.backward()
    gradient = sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)
    shapes = tuple((name, tuple(p.shape)) for name, p in objective.named_parameters())
    collator = TableBatchCollator(str(tmp_path), dataclasses.asdict(config.data))
    return (shapes, float(loss.detach()), gradient, json.dumps(build_deepspeed_config(config.train), sort_keys=True),
            tuple(collator.embedder.texts_to_embed([_LONG_TEXT])))


# The `priors` space acts on the training stream (which episodes are generated), not on anything built from
# the config up front: tests/test_priors_mixing.py checks that its fraction and generator keys change the stream.
@pytest.mark.parametrize("name", sorted(set(SEARCH_SPACES) - {"priors"}))
def test_every_key_a_space_searches_changes_the_run(base, name, tmp_path):
    """A searched key that changes nothing wastes trials and reports noise as a finding (model.text_top_k
    was searched while nothing read it). Each key must, with the other keys at some corner of the space,
    give a different run for every value it takes."""
    import itertools

    from test_model_support import synthetic_batch

    config = with_overrides(base, {"tune.space": name})
    space = search_space(config)
    # 40 columns (every block size differs), 40 rows (every column a target somewhere: both tasks active)
    batch = synthetic_batch(n_rows=40, n_numeric=39, n_categorical=1)
    corners = {key: _corner_values(key, domain) for key, domain in space.items()}
    seen: dict[tuple, tuple] = {}

    def run_of(sample: dict) -> tuple:
        key = tuple(sorted(sample.items()))
        if key not in seen:
            seen[key] = _run_fingerprint(trial_config(config, sample), batch, tmp_path)
        return seen[key]

    for key in space:
        others = [k for k in space if k != key]
        # The first-listed keys vary fastest: a switch listed first (data.prior_fraction) is tried both ways at once.
        for combo in itertools.product(*(corners[k] for k in reversed(others))):
            fixed = dict(zip(reversed(others), combo))
            runs = {run_of({**fixed, key: value}) for value in corners[key]}
            if len(runs) == len(corners[key]):
                break
        else:
            pytest.fail(f"space {name!r}: no setting of the other keys makes every value of {key!r} "
                        f"({corners[key]}) change the run")


def test_a_space_that_can_propose_an_invalid_config_is_rejected_before_any_trial(base):
    from ray import tune

    bad = {"model.d_model": tune.choice([64, 96]), "model.n_heads": tune.choice([4, 5])}
    with pytest.raises(ConfigError, match="model.d_model"):
        check_space(base, bad)


def test_samples_from_optuna_become_plain_python_values(base):
    import numpy as np

    trial = trial_config(base, {"loss.gamma": np.float64(0.25), "loss.weighting": np.str_("mgda")})
    assert trial.loss.gamma == 0.25 and type(trial.loss.gamma) is float and trial.loss.weighting == "mgda"


def test_concurrency_is_the_limiting_resource_over_one_trials_need(base):
    config = with_overrides(base, {"train.num_workers": 2, "data.cpus_per_actor": 1.0, "tune.num_samples": 8})
    assert trial_resources(config) == {"CPU": 3.0}
    assert max_concurrent_trials(config, {"CPU": 16.0}) == 5
    assert max_concurrent_trials(config, {"CPU": 3.0}) == 1
    assert max_concurrent_trials(with_overrides(config, {"tune.num_samples": 2}), {"CPU": 64.0}) == 2

    gpu = with_overrides(config, {"train.use_gpu": True})
    assert max_concurrent_trials(gpu, {"CPU": 64.0, "GPU": 8.0}) == 4  # 8 GPUs / 2 per trial
    assert max_concurrent_trials(with_overrides(gpu, {"tune.max_concurrent_trials": 3}), {"CPU": 64.0, "GPU": 8.0}) == 3


def test_a_trial_that_cannot_fit_the_cluster_is_an_error_naming_the_keys(base):
    config = with_overrides(base, {"train.num_workers": 4})
    with pytest.raises(ConfigError, match="train.num_workers=4"):
        check_fits(config, {"CPU": 2.0})
    with pytest.raises(ConfigError, match="GPU"):
        check_fits(with_overrides(base, {"train.use_gpu": True}), {"CPU": 8.0})
    check_fits(base, {"CPU": 2.0})


def test_tune_config_keys_are_validated(base):
    with pytest.raises(ConfigError, match="tune.reduction_factor"):
        with_overrides(base, {"tune.reduction_factor": 1})
    with pytest.raises(ConfigError, match="tune.space"):
        with_overrides(base, {"tune.space": "widths"})
    with pytest.raises(ConfigError, match="tune.max_concurrent_trials"):
        with_overrides(base, {"tune.max_concurrent_trials": 0})


def _rows():
    return [
        TrialRow("a", "TERMINATED", {"loss.weighting": "paper", "loss.gamma": 0.1}, 0.52, 3),
        TrialRow("b", "TERMINATED", {"loss.weighting": "mgda", "loss.gamma": 0.4}, 0.91, 1, stopped_early=True),
        TrialRow("c", "ERROR", {"loss.weighting": "uncertainty", "loss.gamma": 0.3}, None, 0, error="boom"),
        TrialRow("d", "TERMINATED", {"loss.weighting": "gradient_norm", "loss.gamma": 0.2}, 0.47, 3),
    ]


def test_trials_are_ranked_best_first_with_failed_trials_last():
    assert [r.trial_id for r in rank_trials(_rows(), "min")] == ["d", "a", "b", "c"]
    assert [r.trial_id for r in rank_trials(_rows(), "max")] == ["b", "a", "d", "c"]


def test_tied_trials_rank_the_same_whatever_order_tune_returns_them_in():
    rows = [TrialRow("b2", "TERMINATED", {}, 0.65, 2), TrialRow("a1", "TERMINATED", {}, 0.65, 2),
            TrialRow("c3", "TERMINATED", {}, 0.65, 1)]
    assert [r.trial_id for r in rank_trials(rows, "min")] == ["a1", "b2", "c3"]
    assert [r.trial_id for r in rank_trials(rows[::-1], "min")] == ["a1", "b2", "c3"]


def test_trials_markdown_lists_every_trial_with_its_params_and_outcome():
    table = trials_markdown(_rows(), "val_loss", "min")
    lines = table.strip().splitlines()
    assert lines[0].startswith("| rank | trial | status | val_loss (min) | reports | loss.gamma | loss.weighting")
    assert len(lines) == 2 + 4
    assert lines[2].startswith("| 1 | d | TERMINATED | 0.47 | 3 | 0.2 | gradient_norm")
    assert "(ASHA stop)" in lines[4] and lines[5].startswith("| 4 | c | ERROR | — |")


def test_trials_plot_is_a_png(tmp_path):
    path = plot_trials(_rows(), "val_loss", "min", tmp_path / "trials.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    empty = plot_trials([TrialRow("x", "ERROR", {"loss.gamma": 0.1}, None, 0)], "val_loss", "min", tmp_path / "e.png")
    assert empty.is_file()


def test_a_search_fails_fast_naming_the_key_before_ray_starts(base, tmp_path):
    import ray

    from basisfm.tune import run_search

    with pytest.raises(ConfigError, match="corpus.out_dir"):
        run_search(with_overrides(base, {"corpus.out_dir": str(tmp_path / "no-corpus")}))
    with pytest.raises(ConfigError, match="data.validation_tables"):
        run_search(with_overrides(base, {"data.validation_tables": 0}))
    assert not ray.is_initialized()
