"""Contrastive pretraining of the column-name projection: names of columns that hold the same quantity land together.

The projection is a residual linear map of the sentence-embedding space, y = normalise(x + W x + b), with W
and b starting at zero (the sentence embedding itself). It is trained with InfoNCE on pairs of names of
columns that hold the same quantity in different corpus tables (`corpus.column_matches`): each name must
pick its partner out of the batch's other names. Saved as safetensors (`encoding.name_embedding` reads it
in the data pipeline without torch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from basisfm.config import NameProjectionConfig
from basisfm.encoding.name_embedding import PROJECTION_BIAS, PROJECTION_FORMAT, PROJECTION_WEIGHT, read_projection


class ContrastiveNameProjection(nn.Module):
    """[N, E] sentence embeddings of names -> [N, E] unit vectors; the identity map before training."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x + self.linear(x), dim=-1)


def info_nce_loss(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of [P, E] unit-vector pairs: row i of `anchors` must pick row i of
    `positives` among all P, and the other way round."""
    logits = anchors @ positives.T / temperature  # [P, P]
    labels = torch.arange(len(anchors), device=anchors.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def save_projection(projection: ContrastiveNameProjection, path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {PROJECTION_WEIGHT: projection.linear.weight.detach().cpu().contiguous(),
               PROJECTION_BIAS: projection.linear.bias.detach().cpu().contiguous()}
    save_file(tensors, str(path), metadata={"format": PROJECTION_FORMAT})
    read_projection.cache_clear()  # a file rewritten at the same path must be read again
    return path


def load_projection(path: str | Path) -> ContrastiveNameProjection:
    weight, bias = read_projection(str(path))
    projection = ContrastiveNameProjection(weight.shape[0])
    with torch.no_grad():
        projection.linear.weight.copy_(torch.from_numpy(weight))
        projection.linear.bias.copy_(torch.from_numpy(bias))
    return projection


def pair_recall_at_1(vectors: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> float:
    """Share of held-out pairs (a, b) where b is a's nearest name (cosine) among every other name in the pairs."""
    names = sorted({n for pair in pairs for n in pair})
    if len(names) < 2 or not pairs:
        return float("nan")
    index = {n: i for i, n in enumerate(names)}
    x = np.stack([vectors[n] for n in names]).astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    hits = [np.argmax(similarity[index[a]]) == index[b] or np.argmax(similarity[index[b]]) == index[a] for a, b in pairs]
    return float(np.mean(hits))


@dataclass
class ProjectionReport:
    path: Path
    train_pairs: int
    held_out_pairs: int
    final_loss: float
    seconds: float
    recall_at_1: dict[str, float]  # held-out pair recall@1 per name form


def train_name_projection(config: NameProjectionConfig, *, progress: bool = True) -> ProjectionReport:
    """Mine same-quantity pairs from the corpus, train the projection, save it, score held-out pairs."""
    from basisfm.corpus.column_matches import positive_pairs, same_quantity_groups, split_groups
    from basisfm.corpus.manifest import read_manifest
    from basisfm.encoding.columns import symbolic_name_features
    from basisfm.encoding.text import StringEmbedder

    config.validate("name_projection")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    groups = same_quantity_groups(read_manifest(config.corpus_dir), exclude=config.exclude_tables)
    train_groups, held_groups = split_groups(groups, config.holdout_fraction, config.seed)
    train_pairs = positive_pairs(train_groups)
    # A held-out pair whose two names were also trained on as a pair (another copy of the same data) is no test.
    seen = {frozenset(pair) for pair in train_pairs}
    held_pairs = [pair for pair in positive_pairs(held_groups) if frozenset(pair) not in seen]
    if not train_pairs:
        raise ValueError(f"corpus {config.corpus_dir!r} holds no pair of same-quantity columns with different names; "
                         "ingest more tables (python -m jobs.ingest)")
    names = sorted({n for pair in train_pairs + held_pairs for n in pair})
    embedder = StringEmbedder(Path(config.embedding_cache_dir), text_top_k=None)
    sentence = dict(zip(names, np.asarray(embedder.embed(names), dtype=np.float32)))

    a = torch.from_numpy(np.stack([sentence[x] for x, _ in train_pairs]))
    b = torch.from_numpy(np.stack([sentence[y] for _, y in train_pairs]))
    projection = ContrastiveNameProjection(a.shape[1])
    optimizer = torch.optim.AdamW(projection.parameters(), lr=config.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(config.seed)
    loss = torch.tensor(float("nan"))
    for step in range(config.steps):
        batch = torch.randperm(len(a), generator=generator)[: config.batch_size]
        loss = info_nce_loss(projection(a[batch]), projection(b[batch]), config.temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress and (step + 1) % max(1, config.steps // 5) == 0:
            print(f"name projection step {step + 1}/{config.steps}: InfoNCE {loss.item():.3f}", flush=True)
    path = save_projection(projection.eval(), config.out)

    with torch.no_grad():
        projected = projection(torch.from_numpy(np.stack([sentence[n] for n in names]))).numpy()
    symbolic = symbolic_name_features(names).numpy()
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
    forms = {
        "sentence": {n: sentence[n] for n in names},
        "symbolic": dict(zip(names, symbolic + 1e-6)),  # +eps: a name firing no feature still has a direction
        "symbolic+sentence": dict(zip(names, np.hstack([unit(np.stack([sentence[n] for n in names])), unit(symbolic + 1e-6)]))),
        "contrastive": dict(zip(names, projected)),
    }
    recall = {form: pair_recall_at_1(vectors, held_pairs) for form, vectors in forms.items()}
    return ProjectionReport(path, len(train_pairs), len(held_pairs), float(loss.item()), time.perf_counter() - started, recall)
