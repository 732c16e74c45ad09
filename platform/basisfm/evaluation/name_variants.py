"""Column-name variants of an evaluation table, to measure whether a model reads names at all.

  - `real`: the table's own names.
  - `scrambled`: the same names dealt to other columns (a seeded derangement over features and target): every
    name is still a real word, but now says the wrong thing.
  - `synonyms`: each word of a name that the hand-written `SYNONYMS` map knows is replaced by a synonym
    (`price` -> `cost`, `bedrooms` -> `beds`): the meaning stays, the string changes.
  - `none` is not a renaming (a table cannot hold empty, duplicate names): a model reads a table without names
    when its checkpoint says `data.column_name_embedding: none` and `symbolic_name_features: false`, as the
    prior's unnamed tasks show them (`benchmarks.column_names`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from basisfm.encoding.columns import name_tokens

NAME_VARIANTS = ("real", "scrambled", "synonyms", "none")

# A word -> a word or phrase of the same meaning. Written by hand for common table vocabulary (money, people,
# housing, schools, cars, births, sports); words it lacks keep their name unchanged.
SYNONYMS: dict[str, str] = {
    "price": "cost", "cost": "price", "sales": "turnover", "income": "earnings", "salary": "pay", "wage": "pay",
    "expenditure": "spending", "expend": "spending", "tax": "levy", "advertising": "marketing", "value": "worth",
    "age": "years old", "year": "yr", "years": "yrs", "weeks": "wks", "education": "schooling", "school": "schooling",
    "experience": "seniority", "exper": "seniority", "population": "inhabitants", "gender": "sex", "sex": "gender",
    "race": "ethnic group", "ethnicity": "ethnic group", "ethn": "ethnic group", "marital": "married",
    "maritl": "married", "health": "wellbeing", "region": "area", "county": "district", "city": "town",
    "zip": "postcode", "latitude": "lat", "longitude": "lon", "urban": "city", "rank": "grade",
    "discipline": "field", "service": "tenure", "tenure": "permanence", "occupation": "job", "industry": "sector",
    "union": "labour union", "residence": "home", "bedrooms": "beds", "beds": "bedrooms", "bathrooms": "baths",
    "bathrms": "baths", "baths": "bathrooms", "rooms": "chambers", "sqft": "square feet", "lotsize": "plot area",
    "lot": "plot", "size": "area", "living": "residential", "area": "surface", "stories": "floors",
    "fireplaces": "hearths", "heating": "heater", "fuel": "energy", "sewer": "drainage", "waterfront": "lakefront",
    "driveway": "drive", "airco": "air conditioning", "construction": "build", "type": "kind",
    "students": "pupils", "teachers": "instructors", "math": "mathematics", "english": "english language",
    "lunch": "meals", "computer": "pc", "grades": "levels", "mpg": "miles per gallon", "cylinders": "cyl",
    "displacement": "engine size", "horsepower": "hp", "weight": "mass", "acceleration": "accel",
    "origin": "provenance", "visits": "appointments", "gained": "gain", "habit": "smoking", "mature": "older",
    "premie": "premature", "beauty": "attractiveness", "eval": "rating", "credits": "course credits",
    "division": "section", "native": "native speaker", "minority": "minority group", "hits": "base hits",
    "runs": "scores", "walks": "base on balls", "errors": "mistakes", "assists": "helps", "league": "conference",
    "apps": "applications", "accept": "admitted", "enroll": "enrolled", "books": "textbooks", "private": "privately run",
    "outstate": "out of state", "crim": "crime", "cement": "binder", "water": "h2o", "strength": "resistance",
    "aggregate": "gravel", "speed": "clock rate", "screen": "display", "premium": "premium brand", "ads": "adverts",
    "trend": "time index",
}


def scrambled_names(names: list[str], seed: int) -> list[str]:
    """`names` dealt to other positions: a seeded permutation with no name left in its place (n >= 2)."""
    n = len(names)
    if n < 2:
        return list(names)
    order = np.random.default_rng(seed).permutation(n)
    fixed = np.flatnonzero(order == np.arange(n))
    if len(fixed) == 1:  # swap the one fixed point with any other position: both then move
        other = (fixed[0] + 1) % n
        order[fixed[0]], order[other] = order[other], order[fixed[0]]
    elif len(fixed) > 1:  # rotate the fixed points among themselves
        order[fixed] = order[np.roll(fixed, 1)]
    return [names[i] for i in order]


def synonym_name(name: str) -> str:
    """`name` with each word `SYNONYMS` knows replaced (words joined by '_'); unchanged when it knows none."""
    tokens = name_tokens(name)
    if not any(t in SYNONYMS for t in tokens):
        return name
    return "_".join(SYNONYMS.get(t, t).replace(" ", "_") for t in tokens)


def _unique(names: list[str]) -> list[str]:
    """A table needs distinct names: a later duplicate gets `_2`, `_3`, ..."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        out.append(name if count == 1 else f"{name}_{count}")
    return out


def renamed(features: pd.DataFrame, target: pd.Series, variant: str, seed: int = 0) -> tuple[pd.DataFrame, pd.Series, float]:
    """(features, target, share of names changed) under a name `variant` (`real`, `scrambled`, `synonyms`;
    `none` keeps the names, see the module note). Values and row order are untouched."""
    if variant not in NAME_VARIANTS:
        raise ValueError(f"name variant must be one of {NAME_VARIANTS}, got {variant!r}")
    names = [str(c) for c in features.columns] + [str(target.name)]
    if variant == "scrambled":
        new = scrambled_names(names, seed)
    elif variant == "synonyms":
        new = [synonym_name(n) for n in names]
    else:
        new = list(names)
    new = _unique(new)
    changed = float(np.mean([a != b for a, b in zip(names, new)]))
    out = features.copy(deep=False)
    out.columns = new[:-1]
    return out, target.rename(new[-1]), changed
