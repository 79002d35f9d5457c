"""Verifying one's own phone (``defaults.verified_phones``): the profile phone read at the click, a code texted by
D7 Verify from the policy's code sender, the code typed checked by D7 (the bot never knows it), three wrong codes in
a row blocking sending and checking for 15 minutes; and the status App Home shows.

Who verifies is always the Slack user who clicked or submitted (Slack signs it), and what is verified is the number
the code went to, read from their profile: nothing typed but the code. Every call to D7 has a deadline; a failure
keeps nothing as verified and is said in plain words.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from bot.domain.clock import Clock, utc_now
from bot.domain.errors import (
    D7AuthError,
    D7Error,
    D7InsufficientCreditError,
    D7NotFoundError,
    D7OutcomeUnknownError,
    D7RateLimitedError,
    D7UnavailableError,
    D7ValidationError,
    InputError,
    InvalidPhoneNumber,
    inert,
)
from bot.domain.phone import SAFE_NUMBER_TYPES, PhoneNumber, parse_phone
from bot.domain.policy import Policy, country_refusal
from bot.domain.ports import Directory, OneTimeCodes, PhoneVerifications
from bot.domain.verification import CODE_LIFETIME, MAX_WRONG_CODES, Verification, code_sender, minutes_until

log = logging.getLogger("bot.sending")

SEND_WITHIN = 20.0  # seconds for D7 to text a code (its client retries only what provably sent nothing)
CHECK_WITHIN = 10.0  # seconds for D7 to check one
PHONE_WITHIN = 5.0  # seconds App Home waits for the person's phone status (Slack's profile, the database)
# What D7 texts; it puts the code where ``{}`` is. GSM-7 only: one SMS part, at the cheapest rate.
CODE_TEXT = "Your code to verify this phone for alerts from Slack: {}. It expires in %d minutes."
CODE_DIGITS = (4, 10)  # a code typed is digits, this many (spaces and dashes between them are dropped)


@dataclass(frozen=True)
class PhoneStatus:
    """What App Home shows a person about their phone."""

    phone: PhoneNumber | None  # their profile phone, when it is one the bot may text
    verified: bool = False
    problem: str | None = None  # why there is nothing to verify (no phone in the profile, an unusable one)
    blocked_until: datetime | None = None  # too many wrong codes: no tries until then


@dataclass(frozen=True)
class CodeSent:
    """A code is on its way to ``phone`` (``again``: the one texted moments ago, not a new one)."""

    phone: PhoneNumber
    expires_at: datetime
    again: bool = False


@dataclass(frozen=True)
class Verified:
    """``phone`` is the person's verified phone (``before``: it already was)."""

    phone: PhoneNumber
    before: bool = False


@dataclass(frozen=True)
class TryAgain:
    """The code was not accepted, and another may be typed: the words go on the code's field."""

    words: str


@dataclass(frozen=True)
class Stop:
    """No code can be sent or checked now; the words say why (the form gives way to them)."""

    words: str


Started = CodeSent | Verified | Stop
Checked = Verified | TryAgain | Stop


@dataclass(kw_only=True, eq=False)
class PhoneVerifying:
    """One per process. ``directory``: one that reads the profile now (not a cache): the number verified is the
    number in the profile when the person clicked."""

    policy: Policy
    directory: Directory
    store: PhoneVerifications
    codes: OneTimeCodes | None  # D7 Verify; None in a dry run (no code can be texted)
    clock: Clock = utc_now
    send_within: float = SEND_WITHIN
    check_within: float = CHECK_WITHIN

    async def status(self, user_id: str) -> PhoneStatus:
        """Their profile phone now, and whether they verified it."""
        phone = await self._profile_phone(user_id)
        if isinstance(phone, Stop):
            return PhoneStatus(None, problem=phone.words)
        state = await self.store.get(user_id)
        at = self.clock()
        blocked = state.blocked_until if state is not None and state.blocked(at) else None
        return PhoneStatus(phone, verified=state is not None and state.phone == phone.e164, blocked_until=blocked)

    async def start(self, user_id: str) -> Started:
        """Text a code to the person's profile phone (or show the one texted moments ago again)."""
        sender = code_sender(self.policy)
        if self.codes is None:
            return Stop(DRY_RUN)
        if sender is None:
            return Stop(NO_SENDER)
        phone = await self._profile_phone(user_id)
        if isinstance(phone, Stop):
            return phone
        at = self.clock()
        state = await self.store.get(user_id) or Verification(user_id)
        if state.blocked(at):
            return Stop(blocked_words(state, at))
        if state.phone == phone.e164:
            return Verified(phone, before=True)
        if state.reusable_code(phone.e164, at) and state.otp_expires_at is not None:
            return CodeSent(phone, state.otp_expires_at, again=True)
        minutes = int(CODE_LIFETIME.total_seconds() // 60)
        try:
            async with asyncio.timeout(self.send_within):
                otp_id = await self.codes.send_code(
                    phone.e164, self.policy.senders[sender].originator, CODE_TEXT % minutes, minutes * 60
                )
        except TimeoutError:
            return Stop(NO_ANSWER_SENDING)
        except D7Error as exc:
            log.warning("d7 verify: no code texted for %s (%r)", user_id, exc)
            return Stop(d7_failed(exc, sending=True))
        expires = at + CODE_LIFETIME
        await self.store.code_sent(user_id, phone.e164, otp_id, at, expires)
        return CodeSent(phone, expires)

    async def confirm(self, user_id: str, typed: str) -> Checked:
        """Check the code the person typed against the code texted to them (their open one)."""
        code = "".join(typed.split()).replace("-", "")
        if not code.isdigit() or not CODE_DIGITS[0] <= len(code) <= CODE_DIGITS[1]:
            return TryAgain(UNREADABLE)
        at = self.clock()
        state = await self.store.get(user_id)
        if state is not None and state.blocked(at):
            return Stop(blocked_words(state, at))
        if state is None or state.otp_id is None or state.otp_phone is None:
            return Stop(NO_CODE)
        if not state.code_open(at):
            await self.store.drop_code(user_id, state.otp_id)
            return Stop(EXPIRED)
        if self.codes is None:
            return Stop(DRY_RUN)
        try:
            async with asyncio.timeout(self.check_within):
                right = await self.codes.check_code(state.otp_id, code)
        except TimeoutError:
            return TryAgain(NO_ANSWER_CHECKING)
        except D7NotFoundError:  # D7 no longer knows the code
            await self.store.drop_code(user_id, state.otp_id)
            return Stop(EXPIRED)
        except D7Error as exc:
            log.warning("d7 verify: the code of %s not checked (%r)", user_id, exc)
            return TryAgain(d7_failed(exc, sending=False))
        if right:
            phone = await self.store.confirmed(user_id, state.otp_id, at)
            if phone is None:  # a newer code replaced it meanwhile (another click): that one is to be typed
                return Stop(NO_CODE)
            return Verified(PhoneNumber(phone))
        after = await self.store.wrong_code(user_id, state.otp_id, at)
        if after.blocked(at):
            return Stop(f"That code is not right, {MAX_WRONG_CODES} times in a row. {blocked_words(after, at)}")
        left = after.tries_left
        return TryAgain(f"That code is not right: {left} {'try' if left == 1 else 'tries'} left.")

    async def _profile_phone(self, user_id: str) -> PhoneNumber | Stop:
        """The person's profile phone as a number the bot may text, or why not (in their words)."""
        try:
            person = await self.directory.person(user_id)
        except InputError as exc:
            return Stop(str(exc))
        if not person.phone or not person.phone.strip():
            return Stop(NO_PHONE)
        try:
            phone = parse_phone(person.phone, self.policy.defaults.region)
        except InvalidPhoneNumber as exc:
            return Stop(f"The phone number in your Slack profile cannot be texted: {exc.reason}.")
        if (outside := country_refusal(self.policy, phone)) is not None:
            return Stop(f"The phone number in your Slack profile cannot be texted: {outside}.")
        if phone.number_type not in SAFE_NUMBER_TYPES:
            label = phone.number_type.label
            return Stop(
                f"The phone number in your Slack profile is a {inert(label)} number: alerts text only mobile, "
                "landline, toll-free or VoIP numbers."
            )
        return phone


DRY_RUN = (
    "Verifying a phone needs D7: the bot runs in dry run (`D7_API_TOKEN` is not set), so no code can be texted. "
    "Nothing was verified."
)
NO_SENDER = "The policy has no SMS sender to text codes from: ask an admin to add one. Nothing was verified."
NO_PHONE = "Your Slack profile has no phone number: add one (Profile → Edit profile), then verify it here."
NO_CODE = "No code is waiting for you: click *Verify my phone* on the app's Home tab for a new one."
EXPIRED = "That code has expired: click *Verify my phone* on the app's Home tab for a new one."
UNREADABLE = "Type the code from the text: its digits only."
NO_ANSWER_SENDING = (
    "D7 did not answer in time, so no code may have been texted. If one arrives, ignore it and try again in a minute."
)
NO_ANSWER_CHECKING = "D7 did not answer in time: nothing was verified. Submit the code again in a moment."
PHONE_UNREAD = "whether your phone is verified could not be read just now"  # a note on App Home


def blocked_words(state: Verification, at: datetime) -> str:
    """Too many wrong codes: when the person may try again."""
    minutes = minutes_until(state.blocked_until or at, at)
    return f"Too many wrong codes: try again in {minutes} minute{'s' if minutes != 1 else ''}."


def d7_failed(error: D7Error, *, sending: bool) -> str:
    """A D7 failure while texting (``sending``) or checking a code, in plain words; nothing was verified."""
    what = "text a code" if sending else "check the code"
    if isinstance(error, D7AuthError):
        why = "D7 refused the bot's API token: an admin must fix `D7_API_TOKEN`"
    elif isinstance(error, D7InsufficientCreditError):
        why = "the D7 account is out of credit: an admin must top it up"
    elif isinstance(error, D7ValidationError):
        why = f"D7 said the request was invalid ({inert(str(error))[:300]})"
    elif isinstance(error, D7RateLimitedError | D7UnavailableError):
        why = "D7 is unavailable just now: try again in a few minutes"
    elif isinstance(error, D7OutcomeUnknownError) and sending:
        why = "D7 did not answer: if a code arrives, ignore it and try again in a minute"
    elif isinstance(error, D7OutcomeUnknownError):
        why = "D7 did not answer: submit the code again in a moment"
    else:
        status = f" (HTTP {error.http_status})" if error.http_status else ""
        why = f"D7 answered with an error{status}: try again in a few minutes"
    return f"Could not {what}: {why}. Nothing was verified."
