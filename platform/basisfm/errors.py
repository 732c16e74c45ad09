"""Errors a user can cause. Each message names the table, column and value at fault, and what to do."""

from __future__ import annotations


class BasisError(Exception):
    """Base class for every error basisfm raises on purpose."""


class ConfigError(BasisError, ValueError):
    """A run config has an unknown key, a wrong type or an out-of-range value."""


class TableError(BasisError, ValueError):
    """A table (or one of its columns) cannot be used as given."""

    def __init__(self, message: str, *, table: str | None = None, column: str | None = None):
        where = []
        if table is not None:
            where.append(f"table {table!r}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.table = table
        self.column = column


class InputTypeError(BasisError, TypeError):
    """An argument has a type basisfm cannot work with."""


class InputShapeError(InputTypeError, ValueError):
    """An argument has a shape basisfm cannot work with (1-d X, 2-d y, a width other than at fit).

    A `ValueError` as scikit-learn raises for shapes, and an `InputTypeError` as basisfm raised before, so
    code catching either keeps working.
    """


class CheckpointError(BasisError, ValueError):
    """A checkpoint directory is missing files, or its files disagree with each other."""


class TrackingError(BasisError, ValueError):
    """A tracking URI names no MLflow store where one must exist, or its server does not answer."""


class WorkerLostError(BasisError, RuntimeError):
    """A worker process ended abnormally (killed by the system for memory, or by a user) mid-job."""
