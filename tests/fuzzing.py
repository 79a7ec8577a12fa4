"""Hypothesis settings of the fuzz tests (tests/*/test_fuzz_*.py).

The normal run uses the profile ``fuzz-ci``: each test runs the fixed number of examples it
names, derandomized, so every run tries the same inputs. Setting ``CIRRUS_FUZZ_EXAMPLES`` to a
number selects ``fuzz-long``: random inputs, that many examples per pure test, and the
example database in ``.hypothesis/``, so that a failure found there is replayed first next time.
"""

from __future__ import annotations

import os
from typing import Final, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

EXAMPLES_VARIABLE: Final = "CIRRUS_FUZZ_EXAMPLES"
T = TypeVar("T")

settings.register_profile(
    "fuzz-ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz-long",
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def long_run_examples() -> int | None:
    """Return the example count of a long run from ``CIRRUS_FUZZ_EXAMPLES``, or None."""
    text = os.environ.get(EXAMPLES_VARIABLE, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) == 0:
        raise ValueError(f"{EXAMPLES_VARIABLE}={text!r} must be a positive integer")
    return int(text)


def fuzz_settings(examples: int, *, long_share: int = 1) -> settings:
    """Return the settings of one fuzz test that runs ``examples`` examples in a normal run.

    In a long run the test gets ``CIRRUS_FUZZ_EXAMPLES // long_share`` examples (at least
    ``examples``), so that a test that goes through moto can take a smaller share.
    """
    requested = long_run_examples()
    if requested is None:
        return settings(settings.get_profile("fuzz-ci"), max_examples=examples)
    count = max(examples, requested // long_share)
    return settings(settings.get_profile("fuzz-long"), max_examples=count)


def mostly(common: SearchStrategy[T], rare: SearchStrategy[T]) -> SearchStrategy[T]:
    """Draw from ``common`` nine times in ten and from ``rare`` otherwise.

    Fuzz inputs are mostly well-formed so that most examples get past the first check.
    """
    return st.integers(min_value=0, max_value=9).flatmap(lambda n: rare if n == 0 else common)
