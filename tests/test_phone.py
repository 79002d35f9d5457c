"""Phone numbers: parsing what people type, E.164, masked and full display."""

from __future__ import annotations

import pytest

from bot.domain.errors import InvalidPhoneNumber
from bot.domain.phone import NumberDisplay, PhoneNumber, format_full, mask, parse_phone


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+14155550100", "US", "+14155550100"),
        ("+1 (415) 555-0100", "US", "+14155550100"),
        ("(415) 555-0100", "US", "+14155550100"),
        ("415.555.0100", "US", "+14155550100"),
        ("020 7946 0000", "GB", "+442079460000"),
        ("+44 20 7946 0000", "US", "+442079460000"),
        ("  +971 50 123 4567 ", None, "+971501234567"),
        ("06 12 34 56 78", "FR", "+33612345678"),
    ],
)
def test_parse_normalises_to_e164(raw: str, region: str | None, e164: str) -> None:
    assert parse_phone(raw, region) == PhoneNumber(e164)


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("", "US", "empty"),
        ("+1 555", "US", "too short"),
        ("+1415555010099999", "US", "too long"),
        ("+999 123 4567", "US", "unknown country code"),
        ("call me", "US", "only digits"),
        ("+1 415 555 0100; DROP", "US", "only digits"),
        ("4155550100", None, "country code"),
        ("+1 200 555 0100", "US", "no such number"),
    ],
)
def test_invalid_numbers_name_the_input_as_typed(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        parse_phone(raw, region)
    assert info.value.raw == raw
    assert str(info.value).startswith(f"'{raw}' is not a valid phone number: ")
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("e164", "masked", "full"),
    [
        ("+14155550100", "+1 415 ••• 0100", "+1 415-555-0100"),
        ("+442079460000", "+44 20 ••• 0000", "+44 20 7946 0000"),
        ("+971501234567", "+971 50 ••• 4567", "+971 50 123 4567"),
        ("+33612345678", "+33 6 ••• 5678", "+33 6 12 34 56 78"),
    ],
)
def test_display_masked_and_full(e164: str, masked: str, full: str) -> None:
    number = PhoneNumber(e164)
    assert mask(e164) == masked
    assert format_full(e164) == full
    assert number.display() == masked
    assert number.display(NumberDisplay.FULL) == full
    assert e164[-8:-4] not in masked.replace(e164[-4:], "")  # the middle digits are hidden
