"""SMS encoding: GSM-7 vs UCS-2 and segment counts, by table and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.encoding import GSM7_BASIC, GSM7_EXTENSION, Encoding, analyze

GSM_CHARS = sorted(GSM7_BASIC | GSM7_EXTENSION)


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", Encoding.GSM7, 0, 0),
        ("a" * 160, Encoding.GSM7, 160, 1),
        ("a" * 161, Encoding.GSM7, 161, 2),
        ("a" * 306, Encoding.GSM7, 306, 2),
        ("a" * 307, Encoding.GSM7, 307, 3),
        ("€", Encoding.GSM7, 2, 1),
        ("€" * 80, Encoding.GSM7, 160, 1),
        ("€" * 81, Encoding.GSM7, 162, 2),
        ("a" + "€" * 80, Encoding.GSM7, 161, 2),
        # 152 septets then an extension char: its two septets cannot straddle the part boundary
        ("a" * 152 + "{" + "a" * 10, Encoding.GSM7, 164, 2),
        ("a" * 152 + "{" + "a" * 152, Encoding.GSM7, 306, 3),
        ("й" * 70, Encoding.UCS2, 70, 1),
        ("й" * 71, Encoding.UCS2, 71, 2),
        ("й" * 134, Encoding.UCS2, 134, 2),
        ("й" * 135, Encoding.UCS2, 135, 3),
        ("😀", Encoding.UCS2, 2, 1),
        ("😀" * 35, Encoding.UCS2, 70, 1),
        ("😀" * 36, Encoding.UCS2, 72, 2),
        # 66 units then an emoji: the surrogate pair starts the second part
        ("й" * 66 + "😀" + "й" * 3, Encoding.UCS2, 71, 2),
        ("a" * 159 + "é", Encoding.GSM7, 160, 1),  # é is in the basic table
        ("a" * 159 + "ê", Encoding.UCS2, 160, 3),  # ê is not: the whole text becomes UCS-2
    ],
)
def test_known_cases(text: str, encoding: Encoding, units: int, segments: int) -> None:
    info = analyze(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)
    assert info.characters == len(text)


def test_characters_that_forced_unicode_are_listed_once_in_order() -> None:
    info = analyze("“Disk” full — ‘db-1’ “again”")
    assert info.unicode_chars == ("“", "”", "—", "‘", "’")
    assert info.encoding.label == "Unicode"
    assert info.encoding.data_coding == "unicode"


def test_gsm_text_reports_text_data_coding_and_no_forcing_chars() -> None:
    info = analyze("Alert: CPU > 90% on [web-1] ~ {eu} | ^ \\ €")
    assert info.encoding is Encoding.GSM7
    assert info.encoding.data_coding == "text"
    assert info.unicode_chars == ()


@given(st.text(alphabet=GSM_CHARS, max_size=600))
def test_gsm_only_text_is_never_ucs2(text: str) -> None:
    assert analyze(text).encoding is Encoding.GSM7


@given(st.text(max_size=400), st.text(min_size=1, max_size=40))
def test_segments_never_decrease_when_text_grows(text: str, more: str) -> None:
    assert analyze(text + more).segments >= analyze(text).segments


@given(st.text(max_size=400))
def test_segments_cover_the_units(text: str) -> None:
    info = analyze(text)
    if info.units == 0:
        assert info.segments == 0
    elif info.segments == 1:
        assert info.units <= (160 if info.encoding is Encoding.GSM7 else 70)
    else:
        per_part = 153 if info.encoding is Encoding.GSM7 else 67
        assert (info.segments - 1) * per_part < info.units <= info.segments * per_part


@given(st.text(min_size=1, max_size=400))
def test_unicode_chars_are_exactly_the_non_gsm_ones(text: str) -> None:
    info = analyze(text)
    expected = [c for c in dict.fromkeys(text) if c not in GSM7_BASIC and c not in GSM7_EXTENSION]
    assert list(info.unicode_chars) == expected
    assert (info.encoding is Encoding.UCS2) == bool(expected)
