"""Column semantics: what a column is, from its name (sentence embedding + parsed units/prefixes) and its kind.

The sentence embedding of a name comes precomputed in the batch; the symbolic features here add what
a sentence model reads poorly: unit suffixes (`_usd`, `_kg`), `pct`, `log`, `is_`/`n_` prefixes, ids.
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch
from torch import nn

from basisfm.corpus.manifest import ColumnKind

# Each feature fires when any of its tokens is one of the name's tokens (after splitting on
# non-alphanumerics and camelCase, lower-cased). Order is the feature order: append, never reorder,
# or old checkpoints read the wrong features.
SYMBOLIC_VOCABULARY: tuple[tuple[str, frozenset[str]], ...] = (
    ("currency", frozenset({"usd", "eur", "gbp", "jpy", "dollar", "dollars", "price", "cost", "income", "salary", "wage", "revenue", "fee", "rent", "money"})),
    ("mass", frozenset({"kg", "g", "lb", "lbs", "gram", "grams", "weight", "mass", "oz", "ton", "tons"})),
    ("length", frozenset({"cm", "mm", "km", "m", "inch", "inches", "ft", "feet", "height", "length", "width", "depth", "distance", "miles", "mi"})),
    ("time", frozenset({"sec", "secs", "seconds", "min", "mins", "minutes", "hour", "hours", "hr", "day", "days", "week", "month", "year", "years", "yr", "date", "time", "duration"})),
    ("age", frozenset({"age", "aged"})),
    ("percent", frozenset({"pct", "percent", "percentage", "perc", "rate", "ratio", "prop", "proportion", "share", "frac", "fraction"})),
    ("log", frozenset({"log", "ln", "log10", "log2", "logged"})),
    ("count", frozenset({"n", "num", "number", "count", "cnt", "nb", "total", "freq", "frequency"})),
    ("identifier", frozenset({"id", "idx", "index", "key", "code", "uid", "no"})),
    ("flag", frozenset({"is", "has", "flag", "bool", "indicator", "dummy"})),
    ("temperature", frozenset({"temp", "temperature", "celsius", "fahrenheit", "degc", "degf"})),
    ("statistic", frozenset({"mean", "avg", "average", "median", "std", "sd", "var", "min", "max", "sum"})),
    ("location", frozenset({"lat", "latitude", "lon", "lng", "longitude", "city", "state", "country", "region", "zip"})),
    ("category", frozenset({"type", "class", "category", "group", "kind", "label", "status", "sex", "gender"})),
)
# Shape features, not word lists: a trailing digit (x1, v2), a one-letter name, a very long name, a dotted name.
N_SHAPE_FEATURES = 4
N_SYMBOLIC_FEATURES = len(SYMBOLIC_VOCABULARY) + N_SHAPE_FEATURES


def name_tokens(name: str) -> list[str]:
    """'IncomeUSD_log' -> ['income', 'usd', 'log']: split camelCase, digits and every non-alphanumeric."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return [t.lower() for t in re.findall(r"[A-Za-z]+|\d+", spaced)]


@lru_cache(maxsize=65536)
def _symbolic_row(name: str) -> tuple[float, ...]:
    tokens = set(name_tokens(name))
    words = [1.0 if tokens & vocab else 0.0 for _, vocab in SYMBOLIC_VOCABULARY]
    if "%" in name:
        words[[n for n, _ in SYMBOLIC_VOCABULARY].index("percent")] = 1.0
    stripped = name.strip()
    shape = [
        1.0 if re.search(r"\d$", stripped) else 0.0,
        1.0 if len(stripped) == 1 else 0.0,
        1.0 if len(stripped) > 24 else 0.0,
        1.0 if "." in stripped else 0.0,
    ]
    return tuple(words + shape)


def symbolic_name_features(names: list[str]) -> torch.Tensor:
    """[C, N_SYMBOLIC_FEATURES] float32 0/1 features parsed from column names (units, prefixes, shapes)."""
    if not names:
        return torch.zeros(0, N_SYMBOLIC_FEATURES)
    return torch.tensor([_symbolic_row(n) for n in names], dtype=torch.float32)


class ColumnEncoder(nn.Module):
    """One vector per column: projected name embedding + symbolic name features + kind + scale window.

    The name embedding arrives already projected to d_model by the model's shared text projection (the
    same one that embeds category and text cells and label strings), so names and values share a space.
    """

    def __init__(self, d_model: int, n_window_features: int = 2, *, symbolic_features: bool = True):
        super().__init__()
        # Off (`model.symbolic_name_features=false`), the layer stays, so checkpoints keep one shape, but reads
        # nothing: a column's name then reaches the model only through its embedding.
        self.symbolic_features = symbolic_features
        self.symbolic = nn.Linear(N_SYMBOLIC_FEATURES, d_model, bias=False)
        self.kind = nn.Embedding(len(ColumnKind), d_model)
        nn.init.normal_(self.kind.weight, std=0.5)  # on the scale of names and values, not above them
        self.window = nn.Linear(n_window_features, d_model, bias=False)

    def forward(
        self,
        projected_names: torch.Tensor,  # [C, d]
        column_names: list[str],
        column_kinds: torch.Tensor,  # [C] long
        window_features: torch.Tensor,  # [C, n_window_features]; zero rows for string columns
    ) -> torch.Tensor:
        dtype = self.symbolic.weight.dtype  # bf16/fp16 when DeepSpeed casts the model
        symbolic = symbolic_name_features(column_names).to(device=projected_names.device, dtype=dtype)
        if not self.symbolic_features:
            symbolic = torch.zeros_like(symbolic)  # what an unnamed prior column shows: every feature off
        return projected_names + self.symbolic(symbolic) + self.kind(column_kinds) + self.window(window_features.to(dtype))
