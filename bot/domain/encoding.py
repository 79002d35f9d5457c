"""SMS encoding: GSM 03.38 (GSM-7) or UCS-2, and how many segments a text costs.

GSM-7 fits 160 septets in a single SMS and 153 per part when split; an extension character costs two septets
and its two halves never straddle parts. UCS-2 fits 70 units, 67 per part; characters outside the BMP take
two units (a surrogate pair), which never straddle parts either. One non-GSM character makes the whole text UCS-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The GSM 03.38 basic character set, in table order (0x1B, the escape to the extension table, left out).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs an escape septet plus its own.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE = 160
GSM7_PART = 153
UCS2_SINGLE = 70
UCS2_PART = 67


class Encoding(StrEnum):
    """The two encodings an SMS can travel in."""

    GSM7 = "GSM-7"
    UCS2 = "UCS-2"

    @property
    def data_coding(self) -> str:
        """D7's ``data_coding`` value for this encoding."""
        return "text" if self is Encoding.GSM7 else "unicode"

    @property
    def label(self) -> str:
        """How the encoding is named to people."""
        return "GSM-7" if self is Encoding.GSM7 else "Unicode"


@dataclass(frozen=True)
class SmsInfo:
    """What a text costs as SMS."""

    encoding: Encoding
    characters: int
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int
    unicode_chars: tuple[str, ...]  # the distinct characters that forced UCS-2, in order of appearance


def _limits(encoding: Encoding) -> tuple[int, int]:
    return (GSM7_SINGLE, GSM7_PART) if encoding is Encoding.GSM7 else (UCS2_SINGLE, UCS2_PART)


def is_gsm7(char: str) -> bool:
    """True when ``char`` can be sent in GSM-7 (basic or extension table)."""
    return char in GSM7_BASIC or char in GSM7_EXTENSION


def _cost(char: str, encoding: Encoding) -> int:
    if encoding is Encoding.GSM7:
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def _count_segments(costs: list[int], single: int, part: int) -> int:
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    # Fill parts greedily; a character whose units do not fit starts the next part (never split it).
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments += 1
            used = 0
        used += cost
    return segments


def analyze(text: str) -> SmsInfo:
    """Encoding, units and segment count of ``text`` sent as one SMS."""
    forced: dict[str, None] = {}
    for char in text:
        if not is_gsm7(char):
            forced.setdefault(char, None)
    encoding = Encoding.UCS2 if forced else Encoding.GSM7
    costs = [_cost(char, encoding) for char in text]
    single, part = _limits(encoding)
    return SmsInfo(
        encoding=encoding,
        characters=len(text),
        units=sum(costs),
        segments=_count_segments(costs, single, part),
        unicode_chars=tuple(forced),
    )
