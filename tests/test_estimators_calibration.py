"""Recalibration of in-context class-indicator estimates (`basisfm.estimators.calibration`): fitted on held-out
training rows, kept only where it lifts their accuracy, saved with the estimator."""

from __future__ import annotations

import numpy as np
import pytest

from basisfm.estimators.calibration import CALIBRATION_MARGIN, IndicatorCalibration, class_positions, fit_indicator_calibration


def _binary(estimate_of_positive: np.ndarray) -> np.ndarray:
    return np.stack([1.0 - estimate_of_positive, estimate_of_positive], axis=1)


def test_estimates_leaning_toward_the_middle_are_recalibrated_and_the_majority_class_comes_back():
    """The text-only table's failure: the minority class (30%) estimated around 0.55, with a little signal; raw
    argmax picks the minority class for most rows, the recalibrated one the majority, except where the signal is."""
    rng = np.random.default_rng(0)
    truth = (rng.uniform(size=600) < 0.3).astype(int)
    estimate = np.clip(0.52 + 0.08 * truth + rng.normal(0, 0.05, 600), 0, 1)
    raw_accuracy = np.mean(_binary(estimate).argmax(axis=1) == truth)
    calibration = fit_indicator_calibration(_binary(estimate), truth, 2)
    assert calibration is not None and calibration.held_out_accuracy[0] == pytest.approx(raw_accuracy)
    mapped = calibration.apply(_binary(estimate))
    assert np.allclose(mapped.sum(axis=1), 1.0) and (mapped >= 0).all()
    accuracy = np.mean(mapped.argmax(axis=1) == truth)
    assert accuracy >= raw_accuracy + CALIBRATION_MARGIN and accuracy > 0.7
    assert abs(mapped[:, 1].mean() - truth.mean()) < 0.05  # the class's estimate now averages its rate


def test_estimates_the_argmax_already_gets_right_are_left_as_they_are():
    rng = np.random.default_rng(1)
    truth = (rng.uniform(size=600) < 0.4).astype(int)
    estimate = np.clip(0.2 + 0.6 * truth + rng.normal(0, 0.15, 600), 0, 1)  # good, if not calibrated
    assert fit_indicator_calibration(_binary(estimate), truth, 2) is None
    assert fit_indicator_calibration(_binary(estimate), np.zeros(600, dtype=int), 2) is None  # one class: nothing to fit


def test_several_classes_get_one_map_each_and_renormalised_probabilities():
    rng = np.random.default_rng(2)
    truth = rng.choice(3, size=900, p=[0.6, 0.25, 0.15])
    # every class's indicator estimated near 0.4-0.5 whatever the row, the true class a little higher
    estimates = 0.42 + 0.06 * (np.arange(3)[None, :] == truth[:, None]) + rng.normal(0, 0.03, (900, 3))
    estimates[:, 2] += 0.08  # the rarest class's indicator leans highest: raw argmax picks it most
    estimates = estimates / estimates.sum(axis=1, keepdims=True)
    calibration = fit_indicator_calibration(estimates, truth, 3)
    assert calibration is not None and len(calibration.slopes) == 3
    mapped = calibration.apply(estimates)
    assert np.allclose(mapped.sum(axis=1), 1.0)
    assert np.mean(mapped.argmax(axis=1) == truth) > np.mean(estimates.argmax(axis=1) == truth) + CALIBRATION_MARGIN


def test_a_calibration_round_trips_through_its_saved_state_and_positions_read_labels_as_text():
    calibration = IndicatorCalibration((1.5,), (-0.7,), (0.45, 0.66))
    again = IndicatorCalibration.from_state(calibration.to_state())
    assert again == calibration and IndicatorCalibration.from_state(None) is None
    p = _binary(np.array([0.1, 0.5, 0.9]))
    assert np.allclose(again.apply(p), calibration.apply(p))
    assert class_positions([1, "0", 1], ["0", "1"]).tolist() == [1, 0, 1]
