"""SecretNumbers: uniform below any bound, refilled from the kernel, never shared with a forked child."""

from __future__ import annotations

import os
import re

from actors.outcomes import authorization_code
from switch.secret_numbers import WORD_RANGE, SecretNumbers

DRAWS = 100_000


def test_every_value_below_a_small_bound_comes_about_equally_often() -> None:
    numbers = SecretNumbers()
    counts = [0] * 10
    for _ in range(DRAWS):
        counts[numbers.below(10)] += 1
    assert all(9_000 < count < 11_000 for count in counts), counts  # 10,000 each, sd about 95


def test_a_bound_that_does_not_divide_the_word_range_favours_no_values() -> None:
    # Taken modulo 3/4 of the range without rejection, the lowest third would come up half the time.
    bound = 3 * WORD_RANGE // 4
    numbers = SecretNumbers()
    low = sum(numbers.below(bound) < bound // 3 for _ in range(DRAWS))
    assert 0.31 < low / DRAWS < 0.36


def test_the_buffer_is_refilled_when_used_up() -> None:
    numbers = SecretNumbers(refill_bytes=8)  # two words a refill
    drawn = [numbers.below(WORD_RANGE) for _ in range(64)]
    assert len(set(drawn)) == 64  # 32 refills, no word handed out twice


def test_a_forked_child_does_not_repeat_its_parents_numbers() -> None:
    numbers = SecretNumbers()
    numbers.below(WORD_RANGE)  # the buffer is full of words still to hand out
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        os.write(write_end, numbers.below(WORD_RANGE).to_bytes(4, "big"))
        os._exit(0)
    os.close(write_end)
    childs = int.from_bytes(os.read(read_end, 4), "big")
    os.close(read_end)
    os.waitpid(child, 0)
    assert childs != numbers.below(WORD_RANGE)


def test_authorization_codes_are_six_digits() -> None:
    codes = {authorization_code() for _ in range(1_000)}
    assert all(re.fullmatch(r"[0-9]{6}", code) for code in codes)
    assert len(codes) > 990  # 1,000 draws of a million values repeat about 0.5 times
