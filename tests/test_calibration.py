"""Temperature scaling and the calibration error (sst2.calibration)."""

import numpy as np
import pytest

from sst2.calibration import ece, fit_temperature, probabilities


def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_with():
    rng = np.random.default_rng(0)
    for logits in (rng.normal(0, 3, 20_000), rng.normal(0, 3, (20_000, 3))):
        truth = probabilities(logits, 2.0)  # an overconfident model: its logits twice too large
        labels = np.array([rng.choice(truth.shape[1], p=p) for p in truth])
        t = fit_temperature(logits, labels)
        assert t == pytest.approx(2.0, rel=0.05)
        assert ece(probabilities(logits, t), labels) < 0.02 < ece(probabilities(logits), labels)


def test_no_temperature_is_fitted_when_dev_cannot_tell():
    logits = np.array([-3.0, -1.0, 2.0, 4.0])
    assert fit_temperature(logits, np.array([0, 0, 1, 1])) == 1.0  # before: 0.05, the search's bound
    assert fit_temperature(logits, np.array([], dtype=int)) == 1.0
    assert fit_temperature(logits, np.array([0, 1, 1, 1])) != 1.0  # one wrong: a temperature can be fitted
