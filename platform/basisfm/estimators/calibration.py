"""Recalibrating in-context class-indicator estimates, where held-out training rows show they need it.

`BasisClassifier(strategy="inference")` estimates P(class | row) as the mean of the model's prediction of the class's
0/1 indicator (`in_context.predict_class_indicators_in_context`). The model learned numeric targets on its prior, not
indicators, and where the features carry little it leans toward the middle: on a text-only table with a 35% class,
that class's estimate averaged above 0.5 and the classifier scored below always predicting the majority class.

At fit, `fit_indicator_calibration` takes the estimates of held-out training rows (each half predicted in context
from the other: `in_context.held_out_class_estimates`) and fits, per indicator, a logistic map of the estimate's logit
(Platt scaling). The map is kept only when it makes the held-out rows' accuracy at least `CALIBRATION_MARGIN` higher:
on the classification screen, held-out gains were at most 0.003 and a map kept on such a gain moved test accuracy
both ways (HMDA -0.013, Titanic +0.007), so tables the model already reads stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Held-out accuracy a recalibration must add to be kept (absolute; the rows are at most 2 x CALIBRATION_QUERIES).
CALIBRATION_MARGIN = 0.03
CLIP = 1e-3  # estimates are clipped to [CLIP, 1 - CLIP] before their logit: a 0 or 1 estimate has no finite logit


@dataclass(frozen=True)
class IndicatorCalibration:
    """Per indicator, P = sigmoid(slope * logit(estimate) + intercept); with two classes one map, for the second
    class's indicator (the first's probability is its complement), else one per class, renormalised."""

    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]
    held_out_accuracy: tuple[float, float]  # (as estimated, recalibrated): why the map was kept

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """[n, L] recalibrated probabilities from `probabilities` as `predict_class_indicators_in_context` gives them."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape[1] == 2:
            positive = _platt(probabilities[:, 1], self.slopes[0], self.intercepts[0])
            return np.stack([1.0 - positive, positive], axis=1)
        mapped = np.stack([_platt(probabilities[:, k], a, b) for k, (a, b) in enumerate(zip(self.slopes, self.intercepts))],
                          axis=1)
        return mapped / mapped.sum(axis=1, keepdims=True)

    def to_state(self) -> dict:
        return {"slopes": list(self.slopes), "intercepts": list(self.intercepts),
                "held_out_accuracy": list(self.held_out_accuracy)}

    @classmethod
    def from_state(cls, state: dict | None) -> "IndicatorCalibration | None":
        if state is None:
            return None
        return cls(tuple(float(v) for v in state["slopes"]), tuple(float(v) for v in state["intercepts"]),
                   tuple(float(v) for v in state["held_out_accuracy"]))


def fit_indicator_calibration(estimates: np.ndarray, truth: np.ndarray, n_classes: int) -> IndicatorCalibration | None:
    """The recalibration of `estimates` ([n, L] probabilities of held-out training rows, classes in fitted order)
    against `truth` ([n] class positions), or None when it does not lift their accuracy by `CALIBRATION_MARGIN`."""
    from sklearn.linear_model import LogisticRegression

    estimates = np.asarray(estimates, dtype=np.float64)
    truth = np.asarray(truth)
    indicators = [1] if n_classes == 2 else list(range(n_classes))
    slopes, intercepts = [], []
    for k in indicators:
        hit = (truth == k).astype(int)
        if hit.min() == hit.max():  # a class absent from (or alone in) the held-out rows: no map to fit
            return None
        # weak regularisation: two parameters on hundreds of rows, but separable rows must not send them to infinity
        fitted = LogisticRegression(C=100.0).fit(_logit(estimates[:, k])[:, None], hit)
        slopes.append(float(fitted.coef_[0, 0]))
        intercepts.append(float(fitted.intercept_[0]))
    candidate = IndicatorCalibration(tuple(slopes), tuple(intercepts), (0.0, 0.0))
    before = float(np.mean(estimates.argmax(axis=1) == truth))
    after = float(np.mean(candidate.apply(estimates).argmax(axis=1) == truth))
    if after < before + CALIBRATION_MARGIN:
        return None
    return IndicatorCalibration(candidate.slopes, candidate.intercepts, (before, after))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, CLIP, 1.0 - CLIP)
    return np.log(p / (1.0 - p))


def _platt(p: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(slope * _logit(p) + intercept)))


def class_positions(labels: Sequence, classes: Sequence[str]) -> np.ndarray:
    """Each label's position among `classes` (labels compared as text, as the classifier embeds them)."""
    index = {text: i for i, text in enumerate(classes)}
    return np.asarray([index[str(label)] for label in labels], dtype=np.int64)
