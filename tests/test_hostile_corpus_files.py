"""Hostile files in a `files` corpus (issue 37): the files users really have, read right or skipped with the reason.

Decimal commas in `;`-separated files, upper-case compressed names, Latin-1 / UTF-16 text, binary bytes
named .csv, and a FIFO named .csv (which must be reported without ever being opened: opening one blocks).
"""

from __future__ import annotations

import bz2
import gzip
import os
import threading

import pyarrow.parquet as pq
import pytest

from basisfm.config import CorpusConfig
from basisfm.corpus.ingest import ingest
from basisfm.corpus.manifest import read_manifest
from basisfm.corpus.sources import FileSource, RawTable, SkippedTable, parse_decimal_commas

_TABLE = "name,value,label\ncafé,1,a\nnaïve,2,b\nsoufflé,3,a\nZürich,4,b\n"


def _ingest(data, out):
    return ingest(CorpusConfig(source="files", files_uri=str(data), out_dir=str(out), workers=1), progress=False)


def _load_only(directory) -> RawTable | SkippedTable:
    source = FileSource(str(directory))
    (ref,) = source.refs()
    return source.load(ref)


def test_decimal_commas_in_a_semicolon_file_are_numbers(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "eu.csv").write_text("price;weight;city\n0,5;1.234,5;Lyon\n1,25;2;Nice\n-3,75;;Lyon\n2;0,001;Metz\n")
    report = _ingest(data, tmp_path / "c")
    (record,) = read_manifest(tmp_path / "c")
    kinds = {c.name: c.kind for c in record.columns}
    assert kinds["price"] == "numeric" and kinds["weight"] == "numeric", kinds
    shard = pq.read_table(tmp_path / "c" / record.shard).to_pydict()
    assert shard["price"] == [0.5, 1.25, -3.75, 2.0]
    assert shard["weight"] == [1234.5, 2.0, None, 0.001]  # "1.234,5": the dot groups thousands
    assert any("decimal commas" in t and "price" in t for t in record.treatments), record.treatments
    assert report.skipped == []


def test_decimal_commas_leave_decimal_points_and_words_alone(tmp_path):
    import pandas as pd

    mostly = ["0,5"] * 19 + ["n/a yet"]
    frame = pd.DataFrame({"dots": ["1.5", "2,5"] * 10, "words": ["red", "blue"] * 10, "mostly": mostly,
                          "half": ["0,5", "Lyon"] * 10})
    notes: list[str] = []
    out = parse_decimal_commas(frame.copy(), notes)
    assert out["dots"].tolist() == ["1.5", "2,5"] * 10  # a decimal point: not this convention, left as text
    assert out["words"].tolist() == ["red", "blue"] * 10
    assert out["mostly"].tolist() == [0.5] * 19 + ["n/a yet"]  # numeric, as any mostly-numeric column
    assert out["half"].tolist() == ["0,5", "Lyon"] * 10  # text: kept as written
    assert notes == ["decimal commas read as numbers in columns: mostly"]


def test_upper_case_compressed_names_are_decompressed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "UPPER.CSV.GZ").write_bytes(gzip.compress(b"x,y\n1,2\n3,4\n5,6\n"))
    (data / "Other.Tsv.Bz2").write_bytes(bz2.compress(b"x\ty\n1\t2\n3\t4\n5\t6\n"))
    report = _ingest(data, tmp_path / "c")
    assert report.skipped == [] and report.tables == 2, report.skipped
    for record in read_manifest(tmp_path / "c"):
        assert [c.name for c in record.columns] == ["x", "y"] and record.n_rows == 3


@pytest.mark.parametrize("encoding, notes", [
    ("latin-1", ["not UTF-8: read as Windows-1252 / Latin-1 text"]),
    ("cp1252", ["not UTF-8: read as Windows-1252 / Latin-1 text"]),
    ("utf-16", ["read as UTF-16 text"]),  # with a byte-order mark, as Excel's "Unicode text" writes it
    ("utf-16-le", ["read as UTF-16 text"]),  # without one
    ("utf-8-sig", []),
])
def test_text_in_the_usual_encodings_is_read(tmp_path, encoding, notes):
    (tmp_path / "t.csv").write_bytes(_TABLE.encode(encoding))
    loaded = _load_only(tmp_path)
    assert isinstance(loaded, RawTable), loaded
    assert list(loaded.frame.columns) == ["name", "value", "label"]
    assert loaded.frame["name"].tolist() == ["café", "naïve", "soufflé", "Zürich"]
    assert loaded.notes == notes


def test_mostly_utf8_with_one_broken_byte_stays_utf8(tmp_path):
    (tmp_path / "t.csv").write_bytes(_TABLE.encode("utf-8") + "Lyon\xe9,5,a\n".encode("latin-1"))
    loaded = _load_only(tmp_path)
    assert loaded.frame["name"].tolist() == ["café", "naïve", "soufflé", "Zürich", "Lyon\ufffd"]
    assert loaded.notes == ["UTF-8 with 1 invalid byte sequence(s), read as U+FFFD"]


def test_a_latin1_file_is_ingested_with_its_encoding_noted(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.csv").write_bytes(_TABLE.encode("latin-1"))
    report = _ingest(data, tmp_path / "c")
    assert report.skipped == [] and report.tables == 1
    assert report.treated[0]["treatments"][0] == "not UTF-8: read as Windows-1252 / Latin-1 text"


def test_binary_bytes_named_csv_are_skipped_with_what_to_do(tmp_path):
    (tmp_path / "image.csv").write_bytes(bytes(range(256)) * 8)
    loaded = _load_only(tmp_path)
    assert isinstance(loaded, SkippedTable)
    assert loaded.reason.startswith("not delimited text: file ")  # the summary groups skips by this prefix
    assert "image.csv" in loaded.reason and "save it again" in loaded.reason


def test_a_fifo_named_csv_is_reported_as_skipped_without_being_opened(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "good.csv").write_text("x,y\n1,2\n3,4\n")
    os.mkfifo(data / "pipe.csv")
    # Opening a FIFO for reading blocks until a writer comes; the ingest runs in a thread so a regression
    # fails this test in seconds instead of hanging it.
    result = {}
    worker = threading.Thread(target=lambda: result.update(report=_ingest(data, tmp_path / "c")), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():
        with open(data / "pipe.csv", "w"):  # unblock the reader, so the thread ends
            pass
        pytest.fail("the ingest opened the FIFO and blocked on it")
    report = result["report"]
    assert report.tables == 1
    (skipped,) = report.skipped
    assert skipped["id"] == "files/pipe.csv"
    assert "FIFO" in skipped["reason"] and "not a regular file" in skipped["reason"] and "copy the table" in skipped["reason"]
    # Named as the corpus root itself, it is listed and skipped the same way (not "cannot list").
    assert "FIFO" in _load_only(data / "pipe.csv").reason
