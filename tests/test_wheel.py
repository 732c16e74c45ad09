"""The built wheel is a working library on its own: installed outside the repository it holds every shipped
checkpoint, and the estimators fit and predict with them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "platform" / "basisfm" / "pretrained"

# Run in a fresh interpreter whose only basisfm is the unpacked wheel (the repository is not on its path).
USE_THE_WHEEL = r"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import basisfm
from basisfm.estimators import BasisRegressor

wheel_dir = Path(sys.argv[1]).resolve()
assert Path(basisfm.__file__).resolve().is_relative_to(wheel_dir), basisfm.__file__
rng = np.random.default_rng(0)
X = pd.DataFrame({"size": rng.uniform(50, 200, 120), "rooms": rng.integers(1, 6, 120).astype(float),
                  "district": rng.choice(["north", "south", "east"], 120)})
y = 3.0 * X["size"] + 20.0 * X["rooms"] + X["district"].map({"north": 50.0, "south": 0.0, "east": 25.0})
train, test = slice(0, 96), slice(96, 120)
in_context = BasisRegressor(strategy="inference", n_estimators=1).fit(X[train], y[train])
per_row = BasisRegressor(checkpoint="per_row", max_steps=5, progress=False).fit(X[train], y[train])
for model in (in_context, per_row):
    predicted = model.predict(X[test])
    assert predicted.shape == (24,) and np.isfinite(predicted).all()
print(f"in context R2 {in_context.score(X[test], y[test]):.3f}; per-row (5 steps) R2 {per_row.score(X[test], y[test]):.3f}")
"""


def _build_wheel(out_dir: Path, tmp_path: Path) -> Path:
    # Built from a copy, so setuptools' build/ and egg-info never land in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "platform", source / "platform", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(out_dir), str(source)], check=True, capture_output=True, text=True, timeout=300)
    wheels = list(out_dir.glob("basisfm-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_the_wheel_holds_every_shipped_checkpoint_and_predicts_outside_the_repository(tmp_path):
    wheel = _build_wheel(tmp_path / "dist", tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.parent.name for p in PRETRAINED.glob("*/model.safetensors"))
    assert shipped, "no shipped checkpoint found"
    for folder in shipped:  # every folder, whatever it is named
        for file in ("model.safetensors", "config.json", "provenance.json"):
            assert f"basisfm/pretrained/{folder}/{file}" in names, f"the wheel lacks pretrained/{folder}/{file}"
    assert not any(n.startswith(("jobs/", "benchmarks/", "tests/")) for n in names)  # those need the repository

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(installed), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    run = subprocess.run([sys.executable, "-c", USE_THE_WHEEL, str(installed)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "in context R2" in run.stdout
