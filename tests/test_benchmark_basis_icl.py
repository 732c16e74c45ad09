"""benchmarks.basis_icl_ablation's arms are valid stage-1 configs that differ from basis_icl in what they say;
benchmarks.large_context_seconds times the episodes the estimators build. Neither trains here."""

from __future__ import annotations

import torch

from benchmarks import basis_icl_ablation as ablation
from benchmarks import large_context_seconds as large


def test_every_arm_is_a_valid_stage_one_config_and_changes_only_what_it_names():
    from basisfm.config import flatten, load_config

    base = flatten(load_config(ablation.STAGE1, ["model.architecture=basis_icl"]))
    names = [arm.name for arm in ablation.ARMS]
    assert len(set(names)) == len(names) and {"basis_icl", "basis_icl as was", "row-token yardstick", "tab2d"} <= set(names)
    for arm in ablation.ARMS:
        config = flatten(load_config(ablation.STAGE1, list(arm.overrides)))
        changed = {key for key in base if config[key] != base[key]}
        named = {override.split("=")[0] for override in arm.overrides} - {"model.architecture"}
        if arm.name == "tab2d":
            assert config["model.architecture"] == "tab2d"
        else:
            assert changed == named, (arm.name, changed)


def test_the_timed_episode_has_the_whole_context_as_support_rows():
    batch = large.episode(n_support=50, n_query=7, seed=0)
    assert batch.values.shape == (57, large.N_FEATURES + 1)
    assert int(batch.support.sum()) == 50 and int(batch.query_target_mask.sum()) == 7
    assert torch.isfinite(batch.values).all()
