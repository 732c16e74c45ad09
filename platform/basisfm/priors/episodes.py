"""Synthetic tasks as episodes in the `TableBatch` contract, the same contract real tables are collated into.

Per task: support rows show their target cells, query rows' are hidden (`TableBatch.query_target_mask`);
`target_mask` marks the target column(s) in every row; `column_mean` / `column_std` come from the support
rows (the scale a numeric target is standardised with); `row_index` is the row's place in the generated
table. Names and category labels are indices into the fixed banks of `basisfm.priors.banks`: empty names
are zero vectors, so a model sees tasks without names as well as with meaningless ones.
"""

from __future__ import annotations

import torch

from basisfm.corpus.manifest import ColumnKind
from basisfm.data.batch import TableBatch
from basisfm.priors.banks import category_string, name_string
from basisfm.priors.columns import TaskChunk


def _column_stats(chunk: TaskChunk) -> dict[str, torch.Tensor]:
    """[B, C] float64 statistics of every task's columns at once (string columns keep 0 / 1)."""
    values = chunk.values.double()
    numeric_like = (chunk.kinds != int(ColumnKind.CATEGORICAL)).unsqueeze(1)  # [B, 1, C]
    present = ~chunk.missing & numeric_like  # [B, N, C]
    magnitude = values.abs().masked_fill(~present, 0.0)
    abs_max = magnitude.amax(1)
    min_nonzero = magnitude.masked_fill(magnitude == 0, float("inf")).amin(1)
    min_nonzero = torch.where(torch.isfinite(min_nonzero), min_nonzero, torch.zeros_like(min_nonzero))

    in_support = present & chunk.support.unsqueeze(2)
    count = in_support.sum(1)
    safe = count.clamp_min(1).double()
    mean = values.masked_fill(~in_support, 0.0).sum(1) / safe
    var = ((values - mean.unsqueeze(1)) ** 2).masked_fill(~in_support, 0.0).sum(1) / safe
    std = var.sqrt()
    ok = (count > 1) & (std > 0)
    return {"abs_max": abs_max, "min_nonzero": min_nonzero, "mean": torch.where(count > 0, mean, 0.0),
            "std": torch.where(ok, std, torch.ones_like(std))}


def chunk_to_episodes(
    chunk: TaskChunk,
    keep: torch.Tensor,
    names: torch.Tensor,
    categories: torch.Tensor,
    *,
    id_prefix: str = "prior",
) -> list[TableBatch]:
    """One `TableBatch` episode per kept task of `chunk` (one loop step per task, none per row).

    `names` [name_bank_size, E] and `categories` [category_bank_size, E] are the embedding banks, on the
    chunk's device. Episodes stay on that device.
    """
    stats = _column_stats(chunk)
    n_rows = chunk.values.shape[1]
    row_index = torch.arange(n_rows, dtype=torch.long, device=chunk.values.device)
    dim = names.shape[1]
    episodes = []
    kept = torch.nonzero(keep).flatten().tolist()
    for b in kept:
        labels = chunk.labels[b]  # [N, C]
        present = labels >= 0
        bank_index = (chunk.label_base[b].unsqueeze(0) + labels) % categories.shape[0]  # [N, C]
        vocab_index, inverse = torch.unique(bank_index[present], return_inverse=True)
        string_ids = torch.full_like(labels, -1)
        string_ids[present] = inverse
        name_index = chunk.names[b]  # [C]
        named = name_index >= 0
        name_embeddings = torch.zeros(len(name_index), dim, dtype=torch.float32, device=names.device)
        name_embeddings[named] = names[name_index[named]]
        name_list = name_index.tolist()
        episodes.append(TableBatch(
            table_id=f"{id_prefix}/{chunk.generator}/{chunk.seed}/{b}",
            column_names=[name_string(i) if i >= 0 else "" for i in name_list],
            column_kinds=chunk.kinds[b],
            column_name_embeddings=name_embeddings,
            column_abs_max=stats["abs_max"][b],
            column_min_nonzero=stats["min_nonzero"][b],
            values=chunk.values[b].double(),
            missing=chunk.missing[b],
            string_ids=string_ids,
            vocab=[category_string(i) for i in vocab_index.tolist()],
            vocab_embeddings=categories[vocab_index],
            target_mask=chunk.is_target[b].unsqueeze(0).expand(n_rows, -1).clone(),
            row_index=row_index,
            support=chunk.support[b],
            column_mean=stats["mean"][b],
            column_std=stats["std"][b],
        ))
    return episodes
