"""docs/ops-console.md: the audit log keeps `command` with card numbers masked. The command was cut
to 512 characters before it was scrubbed, so a card number across the cut kept its first digits in
the clear (too short to look like a card number once cut); it is masked first now, and so is a log
value before it is cut."""

from __future__ import annotations

import json
from pathlib import Path

from ops.console_audit import COMMAND_CHARS_MAX, AuditLog
from ops.console_auth import Caller, Role
from ops.logs import CARD_NUMBER_CHARS_MAX, VALUE_CHARS_MAX, scrub_value

PAN = "6011000990139424"  # Luhn-valid test number


def test_a_card_number_at_the_end_of_a_long_command_is_not_kept_in_part(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    caller = Caller("olga@ops", Role.viewer, "SHA256:x", "olga", "127.0.0.1")
    kept = 11  # digits of the number before the cut
    line = "cards show " + "#" * (COMMAND_CHARS_MAX - kept - len("cards show ") - 1) + " " + PAN
    assert line[:COMMAND_CHARS_MAX].endswith(PAN[:kept])
    audit.record(caller, line, "usage", mode="shell", exit_status=64)
    recorded = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[0])["command"]
    assert PAN[:kept] not in recorded, f"the audit log keeps {PAN[:kept]} of card {PAN}"


def test_a_card_number_across_the_cut_of_a_long_log_value_is_masked() -> None:
    kept = 11
    value = "#" * (VALUE_CHARS_MAX - kept) + PAN + " and more"
    scrubbed = scrub_value(value)
    assert isinstance(scrubbed, str) and len(scrubbed) <= VALUE_CHARS_MAX
    assert PAN[:kept] not in scrubbed


def test_a_card_number_cut_after_a_long_masked_run_is_masked_too() -> None:
    # The run masked first shrinks the value to far below the cut: what the read's end left of
    # the card (11 digits, too few to look like one) came into view.
    kept = 11
    value = PAN * 250 + "x" * 125 + PAN + " and more" * 600
    assert value.index(PAN, len(PAN) * 250) + kept == VALUE_CHARS_MAX + CARD_NUMBER_CHARS_MAX
    scrubbed = scrub_value(value)
    assert isinstance(scrubbed, str) and PAN[:kept] not in scrubbed, scrubbed


def test_a_card_number_glued_to_letters_past_the_read_is_masked_when_it_comes_into_view() -> None:
    # The read ends between the card number's glued digits and the letter after them: read alone, the
    # 18 digits fail Luhn and are no glued card number; the 250 card numbers before, one run masked,
    # shrink the value so far that they are kept.
    glued = PAN + "07"
    value = PAN * 250 + "y" * (VALUE_CHARS_MAX + CARD_NUMBER_CHARS_MAX - len(glued) - len(PAN) * 250)
    value += glued + "x and more"
    assert value.index(glued, len(PAN) * 250) + len(glued) == VALUE_CHARS_MAX + CARD_NUMBER_CHARS_MAX
    scrubbed = scrub_value(value)
    assert isinstance(scrubbed, str)
    assert PAN[:8] not in scrubbed, scrubbed[-40:]


class _Shown:
    """Not a str: logged as str() of it."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text


def test_a_card_number_across_the_cut_of_a_long_value_that_is_not_a_str_is_masked() -> None:
    kept = 11
    scrubbed = scrub_value(_Shown("#" * (VALUE_CHARS_MAX - kept) + PAN + " and more"))
    assert isinstance(scrubbed, str) and len(scrubbed) <= VALUE_CHARS_MAX
    assert PAN[:kept] not in scrubbed, scrubbed[-40:]


def test_a_mistyped_card_number_split_by_dots_is_masked_in_the_audit_log(tmp_path: Path) -> None:
    # A command is typed text: a card number there is masked Luhn-valid or not, as it is with spaces.
    audit = AuditLog(tmp_path / "audit.jsonl")
    caller = Caller("olga@ops", Role.viewer, "SHA256:x", "olga", "127.0.0.1")
    audit.record(caller, "cards show 6011.0009.9013.9425", "usage", mode="shell", exit_status=64)
    recorded = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[0])["command"]
    assert recorded == "cards show [REDACTED-PAN]", recorded
