"""Phone numbers: parse what people type into E.164, show them in full or masked, and tell their type and region."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

from bot.domain.errors import InvalidPhoneNumber

MASK = "•••"

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.INVALID_LENGTH: "wrong number of digits",
}
# What people paste around numbers: spaces, dots, dashes, brackets, slashes.
_ALLOWED = re.compile(r"^\+?[\d\s().\-/]+$")


class NumberDisplay(StrEnum):
    """How numbers appear in Slack."""

    MASKED = "masked"
    FULL = "full"


class NumberType(StrEnum):
    """What kind of line a number is, as phonenumbers knows it; the values are the policy's names."""

    FIXED_LINE = "fixed_line"
    MOBILE = "mobile"
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"  # NANP numbers do not say which
    TOLL_FREE = "toll_free"
    VOIP = "voip"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    UAN = "uan"
    PERSONAL_NUMBER = "personal_number"
    PAGER = "pager"
    VOICEMAIL = "voicemail"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        """In plain words, for use before "number": ``premium-rate``."""
        return _TYPE_WORDS.get(self, self.value.replace("_", " "))


# Texts to these reach a person and cost the ordinary rate: allowed everywhere. Every other type (premium-rate,
# shared-cost, UAN and personal numbers are where SMS pumping and toll fraud collect; pagers and voicemail do not
# read texts; unknown is anything phonenumbers cannot place) needs a rule's allow_number_types. A positive list, so
# a type phonenumbers adds later is refused until someone decides otherwise.
SAFE_NUMBER_TYPES = frozenset(
    {
        NumberType.FIXED_LINE,
        NumberType.MOBILE,
        NumberType.FIXED_LINE_OR_MOBILE,
        NumberType.TOLL_FREE,
        NumberType.VOIP,
    }
)
_TYPE_WORDS = {
    NumberType.FIXED_LINE: "landline",
    NumberType.FIXED_LINE_OR_MOBILE: "landline or mobile",
    NumberType.TOLL_FREE: "toll-free",
    NumberType.VOIP: "VoIP",
    NumberType.PREMIUM_RATE: "premium-rate",
    NumberType.SHARED_COST: "shared-cost",
    NumberType.UAN: "universal access (UAN)",
    NumberType.PERSONAL_NUMBER: "personal (follow-me)",
    NumberType.VOICEMAIL: "voicemail access",
    NumberType.UNKNOWN: "unknown-type",
}
_TYPES = {getattr(phonenumbers.PhoneNumberType, t.name): t for t in NumberType}


@dataclass(frozen=True, order=True)
class PhoneNumber:
    """A valid number in E.164 form (``+14155550100``)."""

    e164: str

    def __str__(self) -> str:
        return self.e164

    def display(self, mode: NumberDisplay = NumberDisplay.MASKED) -> str:
        """The number as people should see it: ``+1 415-555-0100`` or ``+1 415 ••• 0100``."""
        return format_full(self.e164) if mode is NumberDisplay.FULL else mask(self.e164)

    @property
    def number_type(self) -> NumberType:
        """``premium_rate`` for +1 900 …, ``fixed_line_or_mobile`` for most of NANP, ``unknown`` when unplaced."""
        return _number_type(self.e164)

    @property
    def region(self) -> str | None:
        """The ISO region the number belongs to (``US``, ``JM`` for +1 876), None when no single one."""
        return _region(self.e164)


def regions_of_country_code(digits: str) -> list[str]:
    """The regions that share country code ``digits`` (``1`` → the 25 NANP regions, ``44`` → GB, GG, IM, JE);
    empty when ``digits`` is not exactly a country code, or belongs to no region (+800 and other global codes)."""
    if not digits.isdigit() or len(digits) > 3:
        return []
    regions = phonenumbers.region_codes_for_country_code(int(digits))
    return [r for r in regions if is_region(r)]


def is_region(code: str) -> bool:
    """True when ``code`` is a region phonenumbers knows (``US``, ``GB``, ...)."""
    return code in phonenumbers.SUPPORTED_REGIONS


def parse_phone(raw: str, default_region: str | None = None) -> PhoneNumber:
    """Parse ``raw`` as typed; numbers without ``+`` are read in ``default_region``.

    Raises ``InvalidPhoneNumber`` naming ``raw`` as typed.
    """
    text = raw.strip()
    if not text:
        raise InvalidPhoneNumber(raw, "empty")
    if not _ALLOWED.match(text):
        raise InvalidPhoneNumber(raw, "only digits, spaces, dashes, dots, brackets and a leading + are allowed")
    region = None if text.startswith("+") else default_region
    if region is None and not text.startswith("+"):
        raise InvalidPhoneNumber(raw, "write it with its country code, like +14155550100")
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise InvalidPhoneNumber(raw, _PARSE_REASONS.get(exc.error_type, "not a phone number")) from exc
    if not phonenumbers.is_valid_number(number):
        length = phonenumbers.is_possible_number_with_reason(number)
        reason = _LENGTH_REASONS.get(length, "no such number exists in that numbering plan")
        raise InvalidPhoneNumber(raw, reason)
    return PhoneNumber(phonenumbers.format_number(number, PhoneNumberFormat.E164))


# What is derived from a number is kept for the numbers seen last: a broadcast's policy check reads each of its
# 1,000 numbers' type, region and masked form, which parsed each number four times (56 ms on the event loop).
SEEN = 4096


@lru_cache(maxsize=SEEN)
def _parsed(e164: str) -> phonenumbers.PhoneNumber:
    """The parsed number; shared, so never changed by its callers (phonenumbers' functions only read it)."""
    return phonenumbers.parse(e164, None)


@lru_cache(maxsize=SEEN)
def _number_type(e164: str) -> NumberType:
    return _TYPES.get(phonenumbers.number_type(_parsed(e164)), NumberType.UNKNOWN)


@lru_cache(maxsize=SEEN)
def _region(e164: str) -> str | None:
    region: str | None = phonenumbers.region_code_for_number(_parsed(e164))
    return region


@lru_cache(maxsize=SEEN)
def format_full(e164: str) -> str:
    """International format: ``+1 415-555-0100``, ``+44 20 7946 0000``."""
    return phonenumbers.format_number(_parsed(e164), PhoneNumberFormat.INTERNATIONAL)


@lru_cache(maxsize=SEEN)
def mask(e164: str) -> str:
    """Masked form that still lets people recognise a number: ``+1 415 ••• 0100``.

    Keeps the country code, the first group of the national number and its last four digits.
    """
    number = _parsed(e164)
    national = phonenumbers.national_significant_number(number)
    country = f"+{number.country_code}"
    if len(national) <= 6:
        return f"{country} {MASK} {national[-2:]}"
    groups = re.split(r"[\s\-]+", format_full(e164))[1:]
    first = groups[0] if groups and len(groups[0]) <= len(national) - 4 else national[:3]
    return f"{country} {first} {MASK} {national[-4:]}"
