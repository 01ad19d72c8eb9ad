"""The measures the interpolation check reports: Spearman's rho and the settle step."""

import numpy as np

from lowbudget.bench.compose_check import settle_step
from lowbudget.stats import spearman


def test_spearman_matches_pearson_of_ranks_with_ties():
    x = np.array([0, 0.25, 0.5, 0.75, 1.0])
    assert abs(spearman(x, x**3) - 1.0) < 1e-12
    assert abs(spearman(x, -x) + 1.0) < 1e-12
    assert spearman(x, np.array([1, 1, 1, 1, 1.0])) == 0.0
    # one adjacent swap of five: 1 - 6 * 2 / (5 * 24) = 0.9
    assert abs(spearman(x, np.array([0.1, 0.0, 0.2, 0.3, 0.4])) - 0.9) < 1e-12
    # ties share their mean rank: ranks of y are [0.5, 0.5, 2, 3, 4]
    y = np.array([1.0, 1.0, 2.0, 3.0, 4.0])
    r = np.corrcoef(np.arange(5), [0.5, 0.5, 2, 3, 4])[0, 1]
    assert abs(spearman(x, y) - r) < 1e-12


def test_settle_step_is_where_the_estimates_stop_disagreeing_with_the_final_image():
    assert settle_step([False, True, True, False, False], final=False) == 4
    assert settle_step([True, True, True], final=True) == 1  # decided from the first step
    assert settle_step([True, False, True], final=True) == 3
    assert settle_step([False, False, True], final=False) == 4  # the last estimate disagrees: steps + 1
