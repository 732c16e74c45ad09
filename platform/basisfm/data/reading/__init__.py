"""How a table is read, once for every path that reads one: in-context prediction, episodic fine-tuning and
pretraining on real tables (`CorpusTasks`).

  - `table`: the training rows and the rows to predict, prepared together (`in_context_table`), their labelled rows;
  - `features`: which features members read (`table_reading`: relevance by mutual information, or all);
  - `categories`: how categorical features are coded (`coded_categories`: text, ordinal, sorted, target);
  - `transforms`: members' numeric transforms (`ColumnTransform`: power, quantile) and their inverse;
  - `linear_fit`: ridge's cross-fitted prediction of each numeric target as one more column members read (`with_linear_fit`);
  - `retrieval`: the training rows nearest to the queries as their context (`nearest_context`), the queries in
    chunks of neighbours (`neighbouring_chunks`);
  - `members`: each member's episodes (`member_episodes`, `episode`);
  - `corpus_tasks`: pretraining episodes from corpus tables, read the same way (`CorpusTasks`).
Settings: `InContextSettings` (`settings`). Nothing here runs a model: the estimators' in-context prediction
(`basisfm.estimators.in_context`) does, and chooses features by validation with it.
"""

from basisfm.data.reading.categories import coded_categories, ordinal_features, ranks_by_target, smoothed_means, target_signal
from basisfm.data.reading.features import feature_relevance, most_relevant, table_reading
from basisfm.data.reading.members import episode, member_episodes
from basisfm.data.reading.retrieval import nearest_context, neighbouring_chunks
from basisfm.data.reading.settings import CATEGORICAL_FEATURES, FEATURE_SELECTIONS, TRANSFORMS, InContextSettings
from basisfm.data.reading.table import InContextTable, in_context_table, labelled_rows, prepare_training_rows, stacked
from basisfm.data.reading.transforms import TRANSFORM_LEVELS, ColumnTransform, NormalScores

__all__ = [
    "CATEGORICAL_FEATURES", "ColumnTransform", "FEATURE_SELECTIONS", "InContextSettings", "InContextTable",
    "NormalScores", "TRANSFORMS", "TRANSFORM_LEVELS", "coded_categories", "episode", "feature_relevance",
    "in_context_table", "labelled_rows", "member_episodes", "most_relevant", "nearest_context", "neighbouring_chunks",
    "ordinal_features",
    "prepare_training_rows", "ranks_by_target", "smoothed_means", "stacked", "table_reading", "target_signal",
]
