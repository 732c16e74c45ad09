"""Episodic fine-tuning, then in-context prediction (`base-ft` / `peft` with an in-context checkpoint), Mitra's
recipe: each member is fine-tuned on episodes of the table, the episodes pretraining learns from, and validated
by predicting held-out rows in context; it then predicts as `InContextPrediction` does, the training rows its
context.

Settings it reads: the fine-tuning ones (`max_steps`: None is `episodic_steps`; `learning_rate`, `weight_decay`,
`patience`, `validate_every`: None is `episodic_checks` per budget; `validation_fraction`, at most
`VALIDATION_ROWS` rows; `lora_*`, `time_budget_s`, `n_estimators`: None is one member), the in-context ones
(`strategies.in_context`; None codes categories as "text" and reads the "relevance" features, as its episodes
trained), `token_budget`, `retrieval`, `random_state`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from basisfm.data.batch import TableBatch
from basisfm.data.collate import column_cap, prepare_table, rows_per_batch
from basisfm.data.episodes import episodes_from_prepared
from basisfm.data.reading import coded_categories, table_reading
from basisfm.estimators.finetune import default_steps, fine_tune
from basisfm.estimators.strategies.in_context import InContextPrediction, in_context_settings
from basisfm.estimators.strategies.strategy import CHECKS_PER_BUDGET, fine_tune_settings, fit_each_member, validation_split
from basisfm.seeds import derive_seed

# Episodes of the table (Mitra's guide: 128 support and 128 query rows each).
EPISODE_ROWS = 256
EPISODE_QUERY_FRACTION = 0.5
# What a fine-tune of a large table costs (benchmarks/results/finetune_seconds.md). Validation predicts each
# held-out row in context from a 512-row context, about 6 ms a row at 1 thread: 2,000 held-out rows (the shared
# cap, `strategy.MAX_VALIDATION_ROWS`) cost 12 s a check, 155 of the 545 s of a 10,000-row table's fine-tune;
# VALIDATION_ROWS held-out rows cost a quarter of that and the rest train. The same rows score every check, so
# the checks are compared on the same rows and their noise largely cancels.
VALIDATION_ROWS = 512
# A table with at least LARGE_TABLE_ROWS training rows gets LARGE_TABLE_STEPS steps, not `default_steps`' 600: a
# step costs the same on any table (0.65 s at 1 thread: a 600-step budget is most of a 10,000-row table's fine-tune)
# and each draws fresh rows of a large one. Measured on split 0 at 1 thread, 200 steps against 600: CPS1988
# (10,000 training rows) -0.0009 test R², deliveries (7,497) -0.0013, at 0.47x and 0.28x the seconds; Computers
# (4,495) lost 0.021, so tables under LARGE_TABLE_ROWS keep `default_steps` (the gap between 4,495 and 7,497 rows
# is unmeasured; the bound sits in it). Their validation checks: LARGE_TABLE_CHECKS over the budget, one every 25
# steps (12 would be a check every 17 steps, at 3-10 s a check), not `strategy.CHECKS_PER_BUDGET`.
LARGE_TABLE_ROWS = 7_000
LARGE_TABLE_STEPS = 200
LARGE_TABLE_CHECKS = 8


def episodic_steps(n_train_rows: int, rows_per_episode: int) -> int:
    """The step budget of episodic fine-tuning: `LARGE_TABLE_STEPS` from `LARGE_TABLE_ROWS` training rows up,
    else `finetune.default_steps` (about `EPOCHS` passes, within its bounds)."""
    if n_train_rows >= LARGE_TABLE_ROWS:
        return LARGE_TABLE_STEPS
    return default_steps(n_train_rows, rows_per_episode)


def episodic_checks(n_train_rows: int) -> int:
    """Validation checks per budget when `validate_every` is None: `LARGE_TABLE_CHECKS` on a large table, else
    `strategy.CHECKS_PER_BUDGET`."""
    return LARGE_TABLE_CHECKS if n_train_rows >= LARGE_TABLE_ROWS else CHECKS_PER_BUDGET


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
        train_rows, val_rows = validation_split(len(features), estimator.validation_fraction, seed, VALIDATION_ROWS)
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
        settings = fine_tune_settings(estimator, episodic_steps(train_table.num_rows, rows), member,
                                      episodic_checks(train_table.num_rows))
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
