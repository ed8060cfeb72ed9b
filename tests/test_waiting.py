"""dvid_store.testing.wait_until: polls until the server's state is there, returning it."""

from __future__ import annotations

import itertools

import pytest

from dvid_store.testing import wait_until


def test_returns_the_first_truthy_answer_after_polling() -> None:
    answers = iter([None, [], {"sizes": 3}, {"sizes": 4}])
    calls = itertools.count(1)

    def condition() -> object:
        next(calls)
        return next(answers)

    assert wait_until(condition, "sizes", interval=0) == {"sizes": 3}
    assert next(calls) == 4  # asked three times, then stopped


def test_gives_up_saying_what_it_waited_for() -> None:
    polls = itertools.count(1)
    with pytest.raises(AssertionError, match=r"timed out after 0 s waiting for the max label"):
        wait_until(lambda: next(polls) and False, "the max label", timeout=0, interval=0)
    assert next(polls) >= 2  # asked at least once before giving up
