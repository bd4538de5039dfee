"""Backoff of the Python SDK: full jitter within min(cap, base * 2**n)."""

import random
import statistics

import pytest
from tether_client.backoff import Backoff

pytestmark = pytest.mark.pure


def test_defaults():
    backoff = Backoff()
    assert (backoff.base, backoff.cap, backoff.max_attempts) == (0.25, 10.0, None)


@pytest.mark.parametrize("attempt", range(0, 12))
def test_every_delay_is_within_the_bound_of_its_attempt(attempt):
    backoff = Backoff(base=0.25, cap=10.0, rng=random.Random(attempt))
    bound = min(10.0, 0.25 * 2**attempt)
    assert backoff.bound(attempt) == pytest.approx(bound)
    for _ in range(500):
        assert 0.0 <= backoff.delay(attempt) <= bound


def test_bounds_double_until_the_cap():
    backoff = Backoff(base=0.25, cap=10.0)
    assert [backoff.bound(n) for n in range(8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_cap_is_respected_for_huge_attempts():
    backoff = Backoff(base=0.25, cap=3.0, rng=random.Random(7))
    for attempt in (10, 63, 64, 1000, 10**6):
        assert backoff.bound(attempt) == 3.0
        assert all(0.0 <= backoff.delay(attempt) <= 3.0 for _ in range(200))


def test_full_jitter_spreads_over_the_whole_window():
    backoff = Backoff(base=0.25, cap=10.0, rng=random.Random(12345))
    bound = backoff.bound(3)  # 2.0 s
    samples = [backoff.delay(3) for _ in range(20_000)]
    assert min(samples) < 0.02 * bound
    assert max(samples) > 0.98 * bound
    assert statistics.fmean(samples) == pytest.approx(bound / 2, rel=0.03)
    buckets = [0] * 10
    for sample in samples:
        buckets[min(9, int(sample / bound * 10))] += 1
    assert all(1600 < count < 2400 for count in buckets), buckets  # ~2000 each: uniform


def test_injected_rng_makes_delays_reproducible():
    first = Backoff(rng=random.Random(42))
    second = Backoff(rng=random.Random(42))
    assert [first.delay(n) for n in range(10)] == [second.delay(n) for n in range(10)]


def test_attempts_limit():
    backoff = Backoff(max_attempts=3)
    assert [backoff.allows(n) for n in range(5)] == [True, True, True, False, False]
    assert Backoff(max_attempts=0).allows(0) is False
    assert Backoff().allows(10**9) is True  # None: forever


@pytest.mark.parametrize(
    "kwargs", [{"base": 0}, {"base": -1}, {"base": 2.0, "cap": 1.0}, {"max_attempts": -1}]
)
def test_invalid_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_negative_attempt_is_refused():
    with pytest.raises(ValueError):
        Backoff().bound(-1)
