import math

import numpy as np
import pytest

from model.data.crafter_score import crafter_score, success_rates


def test_hand_computed_example():
    # rates 0, 3, 8 and 99 %: ln(1), ln(4), ln(9), ln(100) -> mean = ln(3600)/4 -> 3600**0.25 - 1
    assert crafter_score([0.0, 3.0, 8.0, 99.0]) == pytest.approx(3600 ** 0.25 - 1)
    assert crafter_score([0.0, 3.0, 8.0, 99.0]) == pytest.approx(6.745966692, abs=1e-8)
    assert crafter_score({"a": 100.0, "b": 100.0}) == pytest.approx(100.0)
    assert crafter_score([0.0] * 22) == 0.0


def test_geometric_mean_is_below_arithmetic_mean():
    rates = [50.0, 1.0, 0.0, 20.0]
    assert crafter_score(rates) < np.mean(rates)
    assert not math.isnan(crafter_score(rates))


def test_success_rates_and_validation():
    unlocked = np.array([[1, 0, 3], [0, 0, 1], [2, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(success_rates(unlocked), [50.0, 0.0, 75.0])
    with pytest.raises(ValueError):
        crafter_score([101.0])
    with pytest.raises(ValueError):
        crafter_score([])
