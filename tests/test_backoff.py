"""Backoff: the retry delays as its docstring states them (sans-I/O, no sleeping)."""
import itertools
import random

import pytest

from regmgr import Backoff


def first(backoff, n):
    return list(itertools.islice(backoff.delays(), n))


def test_defaults():
    assert Backoff() == Backoff(initial=0.05, factor=1.25, maximum=0.45, jitter=True)


def test_exponential_then_capped_without_jitter():
    assert first(Backoff(0.05, 2.0, 0.45, jitter=False), 6) == [0.05, 0.1, 0.2, 0.4, 0.45, 0.45]
    assert first(Backoff(1.0, 3.0, 10.0, jitter=False), 4) == [1.0, 3.0, 9.0, 10.0]
    assert first(Backoff(0.2, 1.0, 0.2, jitter=False), 3) == [0.2] * 3  # factor 1: constant


def test_jitter_draws_from_the_upper_half_of_each_delay():
    random.seed(7)
    steps = [0.05, 0.1, 0.2, 0.4, 0.45, 0.45]
    draws = [first(Backoff(factor=2.0), 6) for _ in range(200)]
    for column, delay in zip(zip(*draws), steps):
        assert all(delay / 2 <= d <= delay for d in column)
        assert min(column) < delay * 0.6 and max(column) > delay * 0.9  # spread, not fixed


def test_each_run_starts_again_from_initial():
    backoff = Backoff(jitter=False)
    assert first(backoff, 3) == first(backoff, 3) == [0.05, 0.0625, 0.078125]


@pytest.mark.parametrize("kwargs, says", [
    ({"initial": 0}, "need 0 < initial <= maximum"),
    ({"initial": -0.1}, "need 0 < initial <= maximum"),
    ({"initial": 0.5, "maximum": 0.4}, "need 0 < initial <= maximum"),
    ({"factor": 0.99}, "factor must be at least 1"),
])
def test_bad_policies_are_refused(kwargs, says):
    with pytest.raises(ValueError) as error:
        Backoff(**kwargs)
    assert str(error.value) == says


@pytest.mark.parametrize("kwargs", [
    {"initial": 0.45, "maximum": 0.45}, {"factor": 1.0}, {"initial": 1e-9},
])
def test_edge_policies_are_accepted(kwargs):
    Backoff(**kwargs)
