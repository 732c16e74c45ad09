"""`BasisClassifier`: classification with a Basis model (parameters and treatments: `basisfm.estimators.base`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import ClassifierMixin

from basisfm.corpus.manifest import ColumnKind
from basisfm.data.batch import TableBatch
from basisfm.errors import TableError
from basisfm.estimators.base import _BasisEstimator, _target_series
from basisfm.estimators.finetune import MIN_VALIDATION_ROWS, base_model
from basisfm.estimators.validation import check_class_labels


class BasisClassifier(ClassifierMixin, _BasisEstimator):
    """Classification with the Basis Transformer: class labels are embedded by their text, so their
    names matter (e.g. "approved"/"rejected" say more than 0/1)."""

    _task = "classification"

    def _target_kind(self) -> ColumnKind:
        return ColumnKind.CATEGORICAL

    def _check_target(self, y, n_rows, name, table) -> pd.Series:
        series = check_class_labels(_target_series(y, n_rows, name, table), table, name)
        bad = series.map(lambda v: v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v))).to_numpy(dtype=bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise TableError(f"target row {row} is {series.iloc[row]!r} ({int(bad.sum())} of {n_rows} rows have no class); "
                             "drop those rows before fit", table=table, column=name)
        return series

    def _fit_target_encoding(self, target: pd.Series) -> None:
        self.classes_ = np.unique(target.to_numpy())
        self._class_text = [str(c) for c in self.classes_]
        if len(set(self._class_text)) != len(self._class_text):
            raise TableError(f"classes {list(self.classes_)} are not distinct as text; they are embedded by their text",
                             table="user-table", column=str(target.name))

    def _is_degenerate(self, target: pd.Series) -> bool:
        if len(self.classes_) < 2:
            raise TableError(f"the target has a single class {self.classes_[0]!r}; a classifier needs two or more",
                             table="user-table", column=str(target.name))
        return False

    def _label_embeddings(self) -> torch.Tensor:
        return torch.from_numpy(self._embedder().embed(self._class_text))

    def _label_ids(self, batch: TableBatch, col: int) -> torch.Tensor:
        index = {text: i for i, text in enumerate(self._class_text)}
        ids = batch.string_ids[:, col]
        return torch.tensor([index[batch.vocab[i]] for i in ids.tolist()], dtype=torch.long, device=ids.device)

    def _loss(self, model, batch: TableBatch) -> torch.Tensor:
        col = batch.column_names.index(self.preprocessor_.target.name)
        logits = base_model(model).category_logits(batch, col, self._label_embeddings())
        # One logit row per query row (every row of a plain batch; an episode's support rows show their labels).
        return torch.nn.functional.cross_entropy(logits, self._label_ids(batch, col)[~batch.support])

    def _in_context_validation_loss(self, model, record, context, query, truth: np.ndarray, embedder, settings,
                                    readable) -> float:
        from basisfm.estimators.in_context import predict_label_scores_in_context

        probabilities = predict_label_scores_in_context(model, record, context, query, embedder, self._class_text, settings,
                                                        readable=readable)
        from basisfm.estimators.calibration import class_positions

        true = class_positions(truth, self._class_text)
        return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(true)), true], 1e-12, None))))

    def _validation_loss(self, model, batches: list[TableBatch]) -> float:
        with torch.no_grad():
            losses = [float(self._loss(model, b)) * b.n_rows for b in batches]
        return sum(losses) / max(sum(b.n_rows for b in batches), 1)

    def predict_proba(self, X: Any) -> np.ndarray:
        """[n_rows, n_classes] probabilities, columns in the order of `classes_`, averaged over members (and, in
        context, recalibrated where fit found the estimates off: `calibration_`)."""
        self._check_fitted()
        probabilities = self.strategy_.predict_proba(self, X)
        calibration = getattr(self, "calibration_", None)
        return probabilities if calibration is None else calibration.apply(probabilities)

    def predict(self, X: Any) -> np.ndarray:
        probabilities = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(probabilities, axis=1)]

    def _reads_indicators(self) -> bool:
        """Weights fine-tuned here learned to score the labels (`_loss`); pretrained ones read numbers far better than
        labels (classification screen: docs/model.md), so `inference` predicts each class's 0/1 indicator."""
        return self.strategy == "inference"

    def _choose_features_read(self) -> dict[str, list[str]]:
        """{class: the features every in-context member reads to predict it}, chosen on the training rows: one list
        per class indicator with `inference` (two classes: the second's alone, the first's is its complement),
        the same list for every class when the labels are scored."""
        from basisfm.estimators.in_context import class_indicator_readings, training_reading

        models, record, context, embedder, settings = self.strategy_.training_rows(self)
        if self._reads_indicators():
            readings = class_indicator_readings(models, record, context, embedder, self._class_text, settings)
        else:
            shared = training_reading(models, record, context, embedder, settings)
            readings = {label: shared for label in self._class_text}
        return {label: [record.columns[j].name for j in positions] for label, positions in readings.items()}

    def _fit_calibration(self) -> None:
        """`calibration_`: with `inference`, a recalibration of the class-indicator estimates when held-out training
        rows predicted in context from the other rows show it lifts their accuracy (`estimators.calibration`); None
        otherwise, and for tables under `2 * MIN_VALIDATION_ROWS` rows, whose held-out rows are too few to tell."""
        from basisfm.estimators.calibration import class_positions, fit_indicator_calibration
        from basisfm.estimators.in_context import held_out_class_estimates

        self.calibration_ = None
        context = getattr(self, "context_", None)
        if not self._reads_indicators() or context is None or context.num_rows < 2 * MIN_VALIDATION_ROWS:
            return
        models, record, context, embedder, settings = self.strategy_.training_rows(self)
        read = {label: self.strategy_.positions(self, names) for label, names in self.features_read_.items()}
        estimates, truth = held_out_class_estimates(models, record, context, embedder, self._class_text, settings,
                                                    readings=read)
        self.calibration_ = fit_indicator_calibration(estimates, class_positions(truth, self._class_text), len(self.classes_))

    def _fitted_state(self) -> dict[str, Any]:
        calibration = getattr(self, "calibration_", None)
        return {"classes": [c.item() if hasattr(c, "item") else c for c in self.classes_],
                "calibration": None if calibration is None else calibration.to_state()}

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        from basisfm.estimators.calibration import IndicatorCalibration

        self.classes_ = np.asarray(state["classes"])
        self._class_text = [str(c) for c in self.classes_]
        self.calibration_ = IndicatorCalibration.from_state(state.get("calibration"))  # None: saved before it existed
