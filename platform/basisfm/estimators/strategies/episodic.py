"""Episodic fine-tuning, then in-context prediction (`base-ft` / `peft` with an in-context checkpoint), Mitra's
recipe: each member is fine-tuned on episodes of the table, the episodes pretraining learns from, and validated
by predicting held-out rows in context; it then predicts as `InContextPrediction` does, the training rows its
context.

Settings it reads: the fine-tuning ones (`max_steps`, `learning_rate`, `weight_decay`, `patience`,
`validate_every`, `validation_fraction`, `lora_*`, `time_budget_s`, `n_estimators`: None is one member), the
in-context ones (`strategies.in_context`; None codes categories as "text" and reads the "relevance" features,
as its episodes trained), `token_budget`, `retrieval`, `random_state`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from basisfm.data.batch import TableBatch
from basisfm.data.collate import column_cap, prepare_table, rows_per_batch
from basisfm.data.episodes import episodes_from_prepared
from basisfm.data.reading import coded_categories, table_reading
from basisfm.estimators.finetune import fine_tune
from basisfm.estimators.strategies.in_context import InContextPrediction, in_context_settings
from basisfm.estimators.strategies.strategy import fine_tune_settings, fit_each_member, validation_split
from basisfm.seeds import derive_seed

# Episodes of the table (Mitra's guide: 128 support and 128 query rows each).
EPISODE_ROWS = 256
EPISODE_QUERY_FRACTION = 0.5


class EpisodicFineTuning(InContextPrediction):
    name = "episodic fine-tuning, then in context"

    def fit_members(self, estimator, start, features, target):
        return fit_each_member(estimator, start, lambda model, member: self._fit_member(estimator, model, features, target, member))

    def _fit_member(self, estimator, model, features, target, member: int):
        """One member: its own seeded train/validation split, episodes drawn by its seed.

        Each step draws up to `EPISODE_ROWS` training rows, half of them queries whose targets are hidden and
        half labelled support rows, scaled by their support rows. The episodes read the table as predictions
        will: a table wider than an episode by its most relevant features (`table_reading`; "validated" reads
        as "relevance" here: there is no fine-tuned model yet to validate a shorter list with), categorical
        features coded as `categorical_features` says (with "ordinal", in an order drawn afresh each pass).
        Validation predicts the held-out rows in context, the training rows their context, exactly as
        `predict` will."""
        seed = estimator._member_seed(member)
        train_rows, val_rows = validation_split(len(features), estimator.validation_fraction, seed)
        preprocessor = estimator.preprocessor_
        data_config = estimator._data_config(seed)
        embedder = estimator._embedder()
        train_table = preprocessor.to_arrow(features.iloc[train_rows].reset_index(drop=True),
                                            target.iloc[train_rows].reset_index(drop=True))
        val_features = preprocessor.to_arrow(features.iloc[val_rows].reset_index(drop=True), None)
        val_truth = target.iloc[val_rows].to_numpy()

        record = preprocessor.record()
        names = [c.name for c in record.columns]
        targets = np.asarray([names.index(t) for t in record.candidate_targets], dtype=np.int64)  # all hidden: predicted jointly
        config = replace(data_config, task="episodes", max_rows=EPISODE_ROWS, query_fraction=EPISODE_QUERY_FRACTION,
                         max_episode_targets=len(targets), retrieval=bool(estimator.retrieval))
        rows = min(train_table.num_rows, rows_per_batch(min(len(record.columns), column_cap(config)), config))
        config.episodes_per_table = max(1, -(-train_table.num_rows // max(rows, 1)))  # a pass sees each row about once
        config.validate("estimator")
        settings = fine_tune_settings(estimator, train_table.num_rows, rows, member)
        context = in_context_settings(estimator, members=1, seed=seed)
        prepared = prepare_table(train_table.select(names), record, embedder)  # cells embedded once for every pass
        labelled = np.flatnonzero((~prepared.missing[:, targets]).any(axis=1))
        readable, rank_by = table_reading(prepared, np.setdiff1d(np.arange(len(names)), targets), targets, labelled, context)

        def train_batches(epoch: int) -> list[TableBatch]:
            codes = np.random.default_rng(derive_seed(seed, epoch, "category_codes"))
            coded = coded_categories(prepared, readable, context.categorical_features, codes, rank_by)
            return [TableBatch.from_arrays(a) for a in episodes_from_prepared(
                coded, record, config, seed=derive_seed(seed, epoch), target_positions=targets, feature_positions=readable)]

        def validation(m) -> float:  # the training rows' readable features are the ones just ranked
            return estimator._in_context_validation_loss(m, record, train_table, val_features, val_truth, embedder, context,
                                                         readable)

        return fine_tune(model, train_batches, validation, estimator._loss, settings)
