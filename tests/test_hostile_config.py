"""Hostile run configs (issue 15): names that escape `train.storage_path`, values that crash or exhaust
later instead of failing at load, and config files that are not YAML mappings."""

from __future__ import annotations

import pytest

from basisfm.config import from_dict, load_config
from basisfm.errors import ConfigError


@pytest.mark.parametrize("key", ["train.run_name", "tune.name"])
@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "/abs", "", " ", "x\x00y", "-rf", "a" * 129, "~root", "c:\\x"])
def test_names_that_become_directories_are_plain(key, name):
    section, field = key.split(".")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict({section: {field: name}})


def test_ordinary_names_still_load():
    config = load_config(None, ["train.run_name=basisfm-tiny_v2.1", "tune.name=search-e2e"])
    assert config.train.run_name == "basisfm-tiny_v2.1" and config.tune.name == "search-e2e"
