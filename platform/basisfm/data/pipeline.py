"""The Ray Data pipeline over a corpus: seeded table order, an actor pool that embeds and collates, TableBatch rows.

`build_dataset` yields one row per `TableBatch` (masked-cell batches or, with `data.task: episodes`,
support/query episodes from `data.episodes`) (`{"table_id", "n_cells", "batch"}`, the batch as
`encode_batch` bytes). Training splits it with `ds.streaming_split(n, equal=True)` (or Ray Train's
`datasets={"train": ds}`) and turns each shard back into batches with `iter_table_batches`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence

import numpy as np
import pyarrow.parquet as pq

from basisfm.config import DataConfig
from basisfm.corpus.manifest import TableRecord, read_manifest
from basisfm.data.collate import table_to_arrays
from basisfm.data.wire import decode_batch, encode_arrays
from basisfm.errors import ConfigError, TableError
from basisfm.seeds import derive_seed

if TYPE_CHECKING:  # the collating actors import this module and never need torch
    import ray.data
    from ray.data import ExecutionOptions

    from basisfm.data.batch import TableBatch
# Ray is imported where a dataset is built: the plan and the shard reader serve Ray-free loops too
# (`basisfm.train.local_launcher`, validation batches).

Split = Literal["train", "validation", "all"]
PREFETCH_BLOCKS = 2  # blocks (one actor task's batches each) a consumer fetches ahead of the one it decodes


def split_tables(records: Sequence[TableRecord], data_config: DataConfig) -> tuple[list[TableRecord], list[TableRecord]]:
    """Hold out `validation_tables` distinct tables, chosen by seed, never sharing content with a training table.

    Tables are grouped by content fingerprint first, so a duplicate of a validation table (the
    same data under another name) goes to validation with it instead of leaking into training.
    """
    n_val = data_config.validation_tables
    by_fingerprint: dict[str, list[TableRecord]] = {}
    for record in sorted(records, key=lambda r: r.id):
        by_fingerprint.setdefault(record.fingerprint, []).append(record)
    groups = list(by_fingerprint.values())
    if n_val and n_val >= len(groups):
        raise ConfigError(
            f"config key 'data.validation_tables' is {n_val} but the corpus has only {len(groups)} distinct "
            f"tables; lower it so at least one table is left for training"
        )
    rng = np.random.default_rng(derive_seed("split_tables", data_config.seed))
    order = rng.permutation(len(groups))
    validation = [r for i in order[:n_val] for r in groups[i]]
    train = [r for i in order[n_val:] for r in groups[i]]
    by_id = lambda rs: sorted(rs, key=lambda r: r.id)  # noqa: E731
    return by_id(train), by_id(validation)


def ingest_execution_options() -> ExecutionOptions:
    """Ray Data options that keep batch order deterministic: pass them to Ray Train's DataConfig.

    Ray Train replaces a dataset's execution options with the driver's defaults unless told
    otherwise: `ray.train.DataConfig(execution_options=ingest_execution_options())`.
    """
    from ray.data import ExecutionOptions

    return ExecutionOptions(preserve_order=True)


def plan_epochs(
    corpus_dir: str | Path, data_config: DataConfig, split: Split = "train"
) -> list[tuple[TableRecord, int]]:
    """The (table, seed) pairs `build_dataset` collates, in order: a plain loop over them reproduces it.

    Training runs `data_config.epochs` passes, each over the tables in a fresh seeded order (and
    so with fresh column subsets and masks); validation is one pass in a fixed order.
    """
    records = read_manifest(corpus_dir)
    if not records:
        raise ConfigError(f"corpus directory {str(corpus_dir)!r} has no manifest.jsonl or no tables; run the corpus ingest first")
    if split not in ("train", "validation", "all"):
        raise ConfigError(f"split must be 'train', 'validation' or 'all', got {split!r}")
    train, validation = split_tables(records, data_config)
    chosen = {"train": train, "validation": validation, "all": sorted(records, key=lambda r: r.id)}[split]
    if not chosen:
        raise ConfigError(f"split {split!r} of corpus {str(corpus_dir)!r} is empty; raise data.validation_tables")
    plan = []
    for epoch in range(data_config.epochs if split == "train" else 1):
        order = np.arange(len(chosen))
        if split == "train":
            order = np.random.default_rng(derive_seed("table_order", data_config.seed, epoch)).permutation(len(chosen))
        plan.extend((chosen[i], derive_seed("table", data_config.seed, split, epoch, chosen[i].id)) for i in order)
    return plan


def build_dataset(
    corpus_dir: str | Path,
    data_config: DataConfig,
    split: Split = "train",
    *,
    target_columns: Sequence[str] | None = None,
) -> ray.data.Dataset:
    """A lazy dataset of serialised `TableBatch`es for `split`, deterministic for `data_config.seed`."""
    import ray.data

    # Absolute paths: Ray actors need not share the driver's working directory.
    corpus_dir = Path(corpus_dir).resolve()
    actor_config = dataclasses.replace(data_config, embedding_cache_dir=str(Path(data_config.embedding_cache_dir).resolve()))
    plan = plan_epochs(corpus_dir, data_config, split)
    items = [{"record": record.to_json(), "seed": seed} for record, seed in plan]
    # One block per actor task (`tables_per_task` tables, in order): the block is the task's input as it stands. One
    # block per table made the driver's streaming executor track and bundle 8 tiny blocks for every task, work done
    # in the process that also decodes the batches (benchmarks/results/ingest_throughput.md).
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / data_config.tables_per_task)))
    # This dataset's own context (a copy of the driver's): deterministic order without touching others.
    ds.context.execution_options.preserve_order = True
    return ds.map_batches(
        TableBatchCollator,
        fn_constructor_kwargs={
            "corpus_dir": str(corpus_dir),
            "data_config": dataclasses.asdict(actor_config),
            "target_columns": list(target_columns) if target_columns else None,
        },
        # Dispatching a Ray task costs about as much as collating a small table: small tables travel
        # together (measured: 8 per task more than halves the pipeline's steady-state time).
        batch_size=data_config.tables_per_task,
        compute=ray.data.ActorPoolStrategy(size=data_config.embed_actors),
        num_cpus=data_config.cpus_per_actor,
    )


class TableBatchCollator:
    """Ray Data actor: read one table's shard, embed its strings (cached), emit its serialised batches."""

    def __init__(self, corpus_dir: str, data_config: dict[str, Any], target_columns: list[str] | None = None):
        from basisfm.encoding.text import StringEmbedder

        self.corpus_dir = Path(corpus_dir)
        self.data_config = DataConfig(**data_config)
        self.target_columns = target_columns
        cache_dir = Path(self.data_config.embedding_cache_dir)
        self.embedder = StringEmbedder(cache_dir, text_top_k=self.data_config.text_top_k)

    def __call__(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        table_ids, n_cells, payloads = [], [], []
        for record_json, seed in zip(items["record"], items["seed"]):
            record = TableRecord.from_json(str(record_json))
            table = read_shard(self.corpus_dir, record)
            for arrays in collate_arrays(
                table, record, self.data_config, self.embedder, seed=int(seed), target_columns=self.target_columns
            ):
                table_ids.append(arrays["table_id"])
                n_cells.append(arrays["values"].size)
                payloads.append(encode_arrays(arrays))
        return {
            "table_id": np.asarray(table_ids, dtype=object),
            "n_cells": np.asarray(n_cells, dtype=np.int64),
            "batch": np.asarray(payloads, dtype=object),
        }


def collate_arrays(table, record: TableRecord, data_config: DataConfig, embedder, *, seed: int,
                   target_columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One table's batches for `data.task`: masked-cell batches (`collate`) or episodes (`episodes`)."""
    from basisfm.encoding.name_embedding import name_embedder_for

    embedder = name_embedder_for(data_config, embedder)  # column names as `data.column_name_embedding` asks
    if data_config.task == "episodes":
        from basisfm.data.episodes import table_to_episode_arrays

        return table_to_episode_arrays(table, record, data_config, embedder, seed=seed, target_columns=target_columns)
    return table_to_arrays(table, record, data_config, embedder, seed=seed, target_columns=target_columns)


def collate_record(
    corpus_dir: str | Path,
    record: TableRecord,
    data_config: DataConfig,
    embedder,
    *,
    seed: int,
    target_columns: Sequence[str] | None = None,
) -> list["TableBatch"]:
    """Read a record's shard and cut it into batches: the same code the actor pool runs, for plain loops."""
    from basisfm.data.batch import TableBatch

    table = read_shard(corpus_dir, record)
    return [TableBatch.from_arrays(a) for a in collate_arrays(table, record, data_config, embedder, seed=seed,
                                                               target_columns=target_columns)]


def read_shard(corpus_dir: str | Path, record: TableRecord):
    """The record's normalised table (a pyarrow.Table) from its Parquet shard."""
    shard = Path(corpus_dir) / record.shard
    if not shard.is_file():
        raise TableError(f"shard {str(shard)!r} is missing; re-run the corpus ingest", table=record.id)
    return pq.read_table(shard)


def iter_table_batches(dataset_or_shard: ray.data.Dataset | ray.data.DataIterator,
                       prefetch_blocks: int = PREFETCH_BLOCKS) -> Iterator["TableBatch"]:
    """Decode the rows of a `build_dataset` dataset, or of one of its streaming splits, into TableBatches.

    `prefetch_blocks` blocks are fetched from the object store ahead of the one being decoded."""
    # Whole blocks as Arrow tables: no per-row dict conversion of the (large) payload column.
    for block in dataset_or_shard.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=prefetch_blocks):
        for payload in block.column("batch").to_pylist():
            yield decode_batch(payload)
