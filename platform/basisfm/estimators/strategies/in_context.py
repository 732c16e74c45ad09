"""In-context prediction (`strategy="inference"` with an in-context checkpoint): no gradient step; the training
rows are the context every prediction reads, through `basisfm.estimators.in_context`.

Settings it reads: `n_estimators` (None: `DEFAULT_MEMBERS`, which cost prediction time alone), `max_context`,
`linear_feature` (None: `linear_choice`, on for a regressor),
`retrieval` (None: `retrieval_choice`, from the number of training rows), `max_columns`, `categorical_features` (None: "auto", benchmarks/results/categorical_coding.md),
`feature_selection` (None: "validated", likewise), `feature_transforms`, `target_transforms`, `random_state`.
Fine-tuned in-context members (`EpisodicFineTuning`) predict the same way, with the defaults their episodes
trained on ("text" codes, "relevance" features, random contexts).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from basisfm.data.reading import InContextSettings
from basisfm.estimators.finetune import FineTuneHistory, resolve_device
from basisfm.estimators.strategies.strategy import Strategy

DEFAULT_MEMBERS = 4  # n_estimators=None with `inference`: in-context members cost prediction time alone
# retrieval=None with `inference`: on when the training rows number more than this many contexts (`retrieval_choice`).
# 1: whenever a random draw would leave rows out (at or under `max_context` rows every member reads them all).
RETRIEVAL_CONTEXTS = 1


def member_count(strategy: str, n_estimators: int | None) -> int:
    """`n_estimators`, else `DEFAULT_MEMBERS` in-context members for `inference` and one fitted member for
    fine-tuning (each costs a fit)."""
    if n_estimators is not None:
        return int(n_estimators)
    return DEFAULT_MEMBERS if strategy == "inference" else 1


def categorical_coding(strategy: str, categorical_features: str | None) -> str:
    """How in-context prediction codes categorical features: `categorical_features`, else "auto" for `inference`
    (a categorical of 5+ values ranked by its target, a narrower one in an order drawn per member; measured on
    both regression suites: benchmarks/results/categorical_coding.md) and "text" once fine-tuned (its training
    episodes embed the strings, so prediction must too)."""
    if categorical_features is not None:
        return categorical_features
    return "auto" if strategy == "inference" else "text"


def feature_choice(strategy: str, feature_selection: str | None) -> str:
    """Which features in-context members read: `feature_selection`, else "validated" for `inference` (measured
    better on the public suite) and "relevance" once fine-tuned (the features its episodes trained on)."""
    if feature_selection is not None:
        return feature_selection
    return "validated" if strategy == "inference" else "relevance"


def retrieval_choice(strategy: str, retrieval: bool | None, n_train: int, max_context: int) -> bool:
    """Whether each chunk of queries reads its nearest training rows: `retrieval`, else, for `inference`, when the
    training rows number more than `RETRIEVAL_CONTEXTS` x `max_context` (a random draw of `max_context` rows shows
    a query a share of the table; retrieval shows it the rows nearest to it); off once fine-tuned (its episodes
    trained on random draws, and it was not measured with retrieval).

    Why: on every public-suite and regression-screen table with more than 512 training rows, 3 splits, retrieval
    scored above the random draw or level with it (-0.004 on MedExp, R² 0.05; +0.002 to +0.098 elsewhere, loans_full_schema 0.734 -> 0.832), the
    smallest of them (College, 621 rows; ncbirths, 800; Sacramento, 745) included, so no larger multiple was
    needed (`benchmarks/results/large_tables.md`)."""
    if retrieval is not None:
        return bool(retrieval)
    return strategy == "inference" and n_train > RETRIEVAL_CONTEXTS * max_context


def linear_choice(strategy: str, task: str | None, linear_feature: bool | None) -> bool:
    """Whether members read ridge's prediction of each numeric target as a column: `linear_feature`, else on for a
    regressor's `inference` and off once fine-tuned (its episodes trained without the column) and for a classifier
    (its class indicators read it when asked; the classification screen measured 0.830 with it against 0.833).

    Why: in context the model reads linear structure below ridge regression; given ridge's cross-fitted answer it
    scored above the plain reading on 8 of 12 public-suite tables and 10 of 12 regression-screen ones, medians
    0.722 -> 0.734 and 0.605 -> 0.673, 3 splits (`benchmarks/results/linear_feature.md`)."""
    if linear_feature is not None:
        return bool(linear_feature)
    return strategy == "inference" and task == "regression"


def in_context_settings(estimator, members: int, seed: int) -> InContextSettings:
    """`InContextSettings` from the estimator's parameters, for `members` members (member k takes entry k % len
    of each transform cycle)."""
    settings = InContextSettings(
        max_context=int(estimator.max_context), n_estimators=members,
        retrieval=retrieval_choice(estimator.strategy, estimator.retrieval, _training_rows(estimator), int(estimator.max_context)),
        max_columns=int(estimator.max_columns), feature_selection=feature_choice(estimator.strategy, estimator.feature_selection),
        categorical_features=categorical_coding(estimator.strategy, estimator.categorical_features),
        feature_transforms=tuple(estimator.feature_transforms or ("none",)),
        target_transforms=tuple(estimator.target_transforms or ("none",)),
        linear_feature=linear_choice(estimator.strategy, getattr(estimator, "_task", None), estimator.linear_feature),
        seed=seed)
    settings.validate()
    return settings


def _training_rows(estimator) -> int:
    """The rows an in-context estimator keeps as its context (0 before fit, or when it keeps none)."""
    context = getattr(estimator, "context_", None)
    return 0 if context is None else int(context.num_rows)


class InContextPrediction(Strategy):
    name = "in context"
    keeps_context = True

    def fit_members(self, estimator, start, features, target):
        return ([start.to(resolve_device(estimator.device)).eval()],
                [FineTuneHistory(stopped_because="strategy='inference': no gradient step")])

    # ------------------------------------------------------------------ what every in-context predict reads

    def training_rows(self, estimator):
        """(models, record, context table, embedder, settings): every fitted member predicts (member k of the
        in-context ensemble with model k), reading the training rows kept at fit."""
        settings = in_context_settings(estimator, members=estimator._n_estimators(), seed=int(estimator.random_state))
        return list(estimator.members_), estimator.preprocessor_.record(), estimator.context_, estimator._embedder(), settings

    def prepare(self, estimator) -> None:
        """Prepare the training rows once (read, embedded), for every predict to reuse; only the query rows are
        prepared at predict. Not saved: a loaded estimator prepares them at its first predict."""
        from basisfm.data.reading import prepare_training_rows
        from basisfm.estimators.in_context import class_indicator_rows

        record, context, embedder = estimator.preprocessor_.record(), estimator.context_, estimator._embedder()
        if getattr(estimator, "_task", None) == "classification" and estimator._reads_indicators():
            estimator._prepared_training_rows = class_indicator_rows(record, context, embedder, estimator._class_text)
        else:
            estimator._prepared_training_rows = prepare_training_rows(record, context, embedder)

    def prepared(self, estimator):
        """The training rows as `prepare` left them (prepared now after a load)."""
        if getattr(estimator, "_prepared_training_rows", None) is None:
            self.prepare(estimator)
        return estimator._prepared_training_rows

    def features_read(self, estimator):
        """`features_read_`, chosen now for an estimator saved before it existed."""
        if getattr(estimator, "features_read_", None) is None:
            estimator.features_read_ = estimator._choose_features_read()
        return estimator.features_read_

    @staticmethod
    def positions(estimator, names: list[str]) -> np.ndarray:
        """Positions of feature `names` among the fitted record's columns (what in-context reading takes)."""
        columns = [c.name for c in estimator.preprocessor_.record().columns]
        return np.asarray([columns.index(name) for name in names], dtype=np.int64)

    def _query(self, estimator, X: Any):
        return estimator.preprocessor_.to_arrow(estimator._features(X), None)

    # ------------------------------------------------------------------ predict

    def predict_numeric(self, estimator, X, levels):
        from basisfm.estimators.in_context import predict_numeric_in_context

        query = self._query(estimator, X)
        models, record, context, embedder, settings = self.training_rows(estimator)
        point, q = predict_numeric_in_context(models, record, context, query, embedder, settings, quantiles=levels,
                                              readable=self.positions(estimator, self.features_read(estimator)),
                                              prepared_train=self.prepared(estimator))
        return point[..., None] if levels is None else q

    def predict_proba(self, estimator, X):
        from basisfm.estimators.in_context import predict_class_indicators_in_context, predict_label_scores_in_context

        query = self._query(estimator, X)
        models, record, context, embedder, settings = self.training_rows(estimator)
        read = {label: self.positions(estimator, names) for label, names in self.features_read(estimator).items()}
        if estimator._reads_indicators():
            return predict_class_indicators_in_context(models, record, context, query, embedder, estimator._class_text,
                                                       settings, readings=read, prepared=self.prepared(estimator))
        return predict_label_scores_in_context(models, record, context, query, embedder, estimator._class_text, settings,
                                               readable=next(iter(read.values())), prepared_train=self.prepared(estimator))
