"""Table sources, normalisation into typed Parquet shards, the manifest, and hold-out exclusion."""

from basisfm.corpus.manifest import ColumnKind, ColumnRecord, ColumnStats, TableRecord, read_manifest, write_manifest

__all__ = ["ColumnKind", "ColumnRecord", "ColumnStats", "TableRecord", "read_manifest", "write_manifest"]
