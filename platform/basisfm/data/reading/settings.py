"""How an in-context member reads a table: the settings every reading step takes, and the choices each allows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from basisfm.errors import ConfigError

CATEGORICAL_FEATURES = ("text", "ordinal", "sorted", "target", "auto")
FEATURE_SELECTIONS = ("relevance", "validated", "random")
TRANSFORMS = ("none", "power", "quantile")


@dataclass
class InContextSettings:
    max_context: int = 512  # training rows a query reads (its support rows)
    n_estimators: int = 4  # members averaged; each has its own seed, feature order / subset and context draw
    # context = the training rows nearest to each chunk of queries, instead of a random draw (even members cut the
    # queries into chunks of neighbours, odd ones in table order: `member_episodes`)
    retrieval: bool = False
    query_batch: int = 128  # query rows per episode (bounds memory; predictions do not depend on it without retrieval)
    max_columns: int = 64  # feature + target columns per episode; wider tables give each member a feature subset
    # which features a member of a too-wide table reads: "relevance" the most informative (mutual information
    # with the target), "random" a random subset per member; "validated": the most relevant, as many of them as
    # predict held-out training rows best in context, pruned (`validated_features`; numeric targets, any width)
    feature_selection: str = "relevance"
    # numbers 0..m-1, order drawn per member; "sorted": in the strings' order; "target": in the order of the
    # value's mean target on the training rows; "auto": "target" for a column of at least
    # `categories.TARGET_ORDER_MIN_LEVELS` values, "ordinal" for a narrower one; "text": embedded strings
    categorical_features: str = "ordinal"
    feature_transforms: tuple[str, ...] = ("none",)  # member k's numeric features go through entry k % len
    target_transforms: tuple[str, ...] = ("none",)  # member k's numeric targets go through entry k % len
    # every member also reads ridge regression's prediction of each numeric target from the features, cross-fitted
    # on the training rows (`linear_fit.with_linear_fit`)
    linear_feature: bool = False
    seed: int = 0

    def validate(self) -> None:
        for name in ("max_context", "n_estimators", "query_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_columns < 2:
            raise ConfigError(f"max_columns must be at least 2, got {self.max_columns!r}")
        if self.feature_selection not in FEATURE_SELECTIONS:
            raise ConfigError(f"feature_selection must be one of {FEATURE_SELECTIONS}, got {self.feature_selection!r}")
        if self.categorical_features not in CATEGORICAL_FEATURES:
            raise ConfigError(f"categorical_features must be one of {CATEGORICAL_FEATURES}, got {self.categorical_features!r}")
        for name in ("feature_transforms", "target_transforms"):
            kinds = getattr(self, name)
            if isinstance(kinds, str) or not kinds:
                raise ConfigError(f"{name} must be a non-empty list drawn from {TRANSFORMS}, got {kinds!r}")
            unknown = [t for t in kinds if t not in TRANSFORMS]
            if unknown:
                raise ConfigError(f"{name} may hold {TRANSFORMS}, got {unknown[0]!r}")


# How every member reads a fitted table (`table_reading`): the feature positions it may read, and what "target"
# coding ranks categories by (None for the other codings).
Reading = tuple[np.ndarray, "np.ndarray | None"]
