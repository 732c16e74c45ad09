"""Hold-out hygiene: find corpus tables that are (near-)copies of evaluation-suite tables, judged by content.

Names are never compared. Every cell is hashed (numbers rounded to 4 significant digits, so float32
round-trips and rescaled storage still agree; strings case-folded), and a candidate table matches a
suite table when
  1. at least two of its columns hold mostly the same *value sets* as suite columns (containment over
     the smaller set, so renamed, reordered, extra, dropped columns and row subsets all still match),
     at least one of them high-cardinality and not densely filling a coarse grid (ages, counts,
     carats in 0.01 steps coincide by chance), and
  2. the *rows* agree: keys built from those matched columns, taken row by row, overlap far more than
     they do once each column is shuffled on its own (chance), by at least `near_duplicate_threshold`.
Step 2 is what keeps unrelated tables with look-alike columns (two surveys with age and education) in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from basisfm.config import CorpusConfig
from basisfm.corpus.normalize import NormalisedColumn, normalise_table
from basisfm.corpus.suite import Suite, SuiteTask

SIGNIFICANT_DIGITS = 4
MIN_DISTINCT = 5  # columns with fewer distinct values carry no evidence
VALUE_CONTAINMENT = 0.7  # share of the smaller value set found in the other column
SPECIFIC_DISTINCT = 20  # a column is specific with at least this many distinct values ...
SPECIFIC_ROW_SHARE = 0.2  # ... and at least this share of the smaller table's rows
MIN_SHARED_ROWS = 5
KEY_WIDTHS = (3, 2)
DENSE_GRID_SHARE = 0.3  # grid-valued columns holding at least this share of their range's grid points are dense
MAX_GRID_DECIMALS = 3  # row keys tried: the best three matched columns, then the best two

_MISSING = np.uint64(0)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_STRING_SALT = "basisfm-strings!"  # pandas wants a 16-character key; keeps strings apart from numbers


@dataclass
class TableSignature:
    """Per-row cell hashes (0 = missing) and each column's distinct hashes, for one table."""

    id: str
    n_rows: int
    fingerprint: str
    row_hashes: list[np.ndarray]  # one uint64 array of length n_rows per column
    distinct: list[np.ndarray]  # sorted unique non-missing hashes per column
    informative: list[bool]  # False for dense grids (ages, counts, carats): they coincide by chance


@dataclass
class HoldoutMatch:
    table_id: str
    duplicate_of: str  # the suite table it copies
    score: float  # share of the smaller table's distinct row keys found in the other
    reason: str

    def to_dict(self) -> dict:
        return {"id": self.table_id, "duplicate_of": self.duplicate_of, "score": round(self.score, 4), "reason": self.reason}


def cell_hashes(column: NormalisedColumn) -> np.ndarray:
    """uint64 per cell; equal values (after rounding / case folding) hash equal, missing cells are 0."""
    n = len(column.values)
    out = np.zeros(n, dtype=np.uint64)
    if column.kind.is_string:
        codes, distinct = pd.factorize(column.values, use_na_sentinel=True)
        present = codes >= 0
        if present.any():
            folded = np.array([str(v).strip().lower() for v in distinct], dtype=object)
            out[present] = pd.util.hash_array(folded, hash_key=_STRING_SALT)[codes[present]]
    else:
        values = column.values
        present = ~np.isnan(values)
        if present.any():
            out[present] = pd.util.hash_array(_rounded_keys(values[present]))
    out[out == _MISSING] = np.uint64(1)  # keep 0 for "missing" only
    out[~present] = _MISSING
    return out


def _rounded_keys(x: np.ndarray) -> np.ndarray:
    """An exact integer per value rounded to SIGNIFICANT_DIGITS: mantissa and decimal exponent packed together."""
    magnitude = np.abs(x)
    nonzero = magnitude > 0
    exponent = np.zeros(len(x), dtype=np.int64)
    exponent[nonzero] = np.floor(np.log10(magnitude[nonzero])).astype(np.int64)
    exponent = np.clip(exponent, -290, 290)  # keeps 10**k finite; values beyond stay distinct enough
    scale = np.power(10.0, (exponent - (SIGNIFICANT_DIGITS - 1)).astype(np.float64))
    mantissa = np.round(x / scale).astype(np.int64)
    carry = np.abs(mantissa) >= 10**SIGNIFICANT_DIGITS  # 9999.7 rounds up into the next decade
    mantissa[carry] = np.round(mantissa[carry] / 10).astype(np.int64)
    exponent[carry] += 1
    exponent[~nonzero] = 0
    return mantissa * 1024 + (exponent + 512)


def table_signature(table_id: str, columns: list[NormalisedColumn], fingerprint: str) -> TableSignature:
    row_hashes = [cell_hashes(c) for c in columns]
    distinct = [np.unique(h[h != _MISSING]) for h in row_hashes]
    n_rows = len(columns[0].values) if columns else 0
    informative = [not _is_dense_grid(c) for c in columns]
    return TableSignature(table_id, n_rows, fingerprint, row_hashes, distinct, informative)


def _is_dense_grid(column: NormalisedColumn) -> bool:
    """Values on a coarse grid that fill much of their range: whole-number ages and counts, carats in
    0.01 steps, scores in 0.5 steps. Any two such columns over similar ranges share most values, so a
    shared value set says nothing about a shared origin."""
    if column.kind.is_string:
        return False
    present = column.values[~np.isnan(column.values)]
    if len(present) == 0:
        return False
    for decimals in range(MAX_GRID_DECIMALS + 1):
        scaled = present * 10.0**decimals
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-6 * np.maximum(1.0, np.abs(scaled))):
            grid_points = float(scaled.max() - scaled.min()) + 1.0
            return len(np.unique(np.round(scaled))) >= DENSE_GRID_SHARE * grid_points
    return False  # finer than any grid: measured, not counted


class HoldoutIndex:
    """The suites' tables, ready to be compared with every corpus table."""

    def __init__(self, signatures: list[TableSignature], threshold: float):
        self.signatures = signatures
        self.threshold = threshold
        self._by_fingerprint = {s.fingerprint: s.id for s in signatures}
        self._ids = {s.id for s in signatures}
        # One sorted array of (hash, owning suite column) over every suite column, so a candidate table's
        # value sets are intersected with all suite columns in a single searchsorted.
        owners, hashes = [], []
        self._columns: list[tuple[int, int]] = []  # global column index -> (signature index, column index)
        for si, sig in enumerate(signatures):
            for ci, distinct in enumerate(sig.distinct):
                if len(distinct) >= MIN_DISTINCT:
                    owners.append(np.full(len(distinct), len(self._columns), dtype=np.int64))
                    hashes.append(distinct)
                    self._columns.append((si, ci))
        hashes_all = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
        owners_all = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        order = np.argsort(hashes_all, kind="stable")
        self._hashes = hashes_all[order]
        self._owners = owners_all[order]
        self._sizes = np.array([len(signatures[si].distinct[ci]) for si, ci in self._columns], dtype=np.int64)

    @classmethod
    def from_suites(cls, suites: list[Suite], config: CorpusConfig) -> "HoldoutIndex":
        """Normalise each suite task's whole table (before its `drop`: more columns, more evidence)."""
        signatures, seen = [], set()
        for suite in suites:
            for task in suite.tasks:
                if task.id in seen:
                    continue
                seen.add(task.id)
                frame = _load_full_frame(task, config)
                normalised = normalise_table(frame, task.id, config)
                signatures.append(table_signature(task.id, normalised.columns, normalised.fingerprint))
        return cls(signatures, config.near_duplicate_threshold)

    def __len__(self) -> int:
        return len(self.signatures)

    def match(self, candidate: TableSignature) -> HoldoutMatch | None:
        """The suite table `candidate` copies, or None."""
        if candidate.id in self._ids:
            return HoldoutMatch(candidate.id, candidate.id, 1.0, "is itself a suite table")
        if candidate.fingerprint in self._by_fingerprint:
            original = self._by_fingerprint[candidate.fingerprint]
            return HoldoutMatch(candidate.id, original, 1.0, "identical content (same fingerprint)")
        best: HoldoutMatch | None = None
        for si, pairs in self._matched_columns(candidate).items():
            suite_sig = self.signatures[si]
            score, used = _row_overlap(candidate, suite_sig, pairs)
            if score >= self.threshold and (best is None or score > best.score):
                best = HoldoutMatch(
                    candidate.id, suite_sig.id, score,
                    f"{score:.0%} of rows agree on {used} columns whose values match",
                )
        return best

    def _matched_columns(self, candidate: TableSignature) -> dict[int, list[tuple[int, int, bool]]]:
        """Per suite table: one-to-one (candidate column, suite column, specific) pairs with shared value sets."""
        if len(self._hashes) == 0:
            return {}
        usable = [ci for ci, d in enumerate(candidate.distinct) if len(d) >= MIN_DISTINCT]
        if not usable:
            return {}
        values = np.concatenate([candidate.distinct[ci] for ci in usable])
        labels = np.concatenate([np.full(len(candidate.distinct[ci]), k, dtype=np.int64) for k, ci in enumerate(usable)])
        left = np.searchsorted(self._hashes, values, side="left")
        right = np.searchsorted(self._hashes, values, side="right")
        counts = right - left
        hit = counts > 0
        if not hit.any():
            return {}
        # Expand each hit into every suite column holding that value.
        starts, counts, hit_labels = left[hit], counts[hit], labels[hit]
        positions = np.repeat(starts - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
        suite_columns = self._owners[positions]
        candidate_columns = np.repeat(hit_labels, counts)
        n_suite = len(self._columns)
        pair_keys, shared = np.unique(candidate_columns * n_suite + suite_columns, return_counts=True)
        cand_k, suite_g = pair_keys // n_suite, pair_keys % n_suite
        cand_sizes = np.array([len(candidate.distinct[ci]) for ci in usable], dtype=np.int64)[cand_k]
        suite_sizes = self._sizes[suite_g]
        smaller = np.minimum(cand_sizes, suite_sizes)
        containment = shared / smaller
        keep = containment >= VALUE_CONTAINMENT
        per_suite: dict[int, list[tuple[float, bool, int, int, int]]] = {}
        for k, g, c, small in zip(cand_k[keep], suite_g[keep], containment[keep], smaller[keep]):
            si, sci = self._columns[g]
            rows = min(candidate.n_rows, self.signatures[si].n_rows)
            specific = bool(
                small >= SPECIFIC_DISTINCT and small >= SPECIFIC_ROW_SHARE * rows
                and candidate.informative[usable[k]] and self.signatures[si].informative[sci]
            )
            per_suite.setdefault(si, []).append((float(c), specific, int(small), usable[k], sci))
        matched: dict[int, list[tuple[int, int, bool]]] = {}
        for si, options in per_suite.items():
            options.sort(key=lambda o: (o[1], o[0], o[2]), reverse=True)
            used_c, used_s, pairs = set(), set(), []
            for _, specific, _, cci, sci in options:
                if cci in used_c or sci in used_s:
                    continue
                used_c.add(cci)
                used_s.add(sci)
                pairs.append((cci, sci, specific))
            if len(pairs) >= 2 and any(p[2] for p in pairs):
                matched[si] = pairs
        return matched


def _row_overlap(candidate: TableSignature, suite: TableSignature, pairs: list[tuple[int, int, bool]]) -> tuple[float, int]:
    """Row agreement beyond chance, best over the key widths tried, and the width that gave it.

    Agreement is the share of the smaller table's distinct row keys found in the other. Chance is the
    same share after shuffling each candidate column on its own (row alignment destroyed, value sets
    kept): a big suite table with dense small-integer columns agrees with almost anything by chance,
    a real copy agrees far more than its shuffled self. The score is (agreement - chance) / (1 - chance).
    """
    best, best_width = 0.0, 0
    rng = np.random.default_rng(0)
    for width in KEY_WIDTHS:
        if width > len(pairs):
            continue
        chosen = pairs[:width]
        suite_keys = np.unique(_row_keys([suite.row_hashes[s] for _, s, _ in chosen]))
        cand_columns = [candidate.row_hashes[c] for c, _, _ in chosen]
        agreement, shared = _key_agreement(np.unique(_row_keys(cand_columns)), suite_keys)
        if shared < MIN_SHARED_ROWS:
            continue
        shuffled = [cand_columns[0]] + [rng.permutation(h) for h in cand_columns[1:]]
        chance, _ = _key_agreement(np.unique(_row_keys(shuffled)), suite_keys)
        score = (agreement - chance) / (1.0 - chance) if chance < 1.0 else 0.0
        if score > best:
            best, best_width = score, width
    return best, best_width


def _key_agreement(cand_keys: np.ndarray, suite_keys: np.ndarray) -> tuple[float, int]:
    shared = len(np.intersect1d(cand_keys, suite_keys, assume_unique=True))
    return shared / max(1, min(len(cand_keys), len(suite_keys))), shared


def _row_keys(columns: list[np.ndarray]) -> np.ndarray:
    key = np.zeros(len(columns[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for hashes in columns:
            key = key * _MIX + hashes  # wraps modulo 2**64 on purpose
    return key


def _load_full_frame(task: SuiteTask, config: CorpusConfig) -> pd.DataFrame:
    from basisfm.corpus.suite import load_task_frame

    whole = SuiteTask(task.source, task.target, task.package, task.item, task.dataset, task.path, (), task.note)
    return load_task_frame(whole, openml_cache_dir=config.openml_cache_dir)
