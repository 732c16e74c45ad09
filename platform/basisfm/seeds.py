"""Stable seeds derived from names and numbers: the one rule every seeded draw in basisfm uses.

Python's `hash()` is salted per process, so a seed that must agree across processes, machines and
reruns (which rows a big table keeps, which tables a run validates on, each table's batch order)
comes from a SHA-256 of its parts instead.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any mix of ints and strings; the same parts give the same seed everywhere.

    Start the parts with what the seed is for (e.g. `derive_seed("table_order", seed, epoch)`), so two
    uses with the same numbers still draw independently.
    """
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
