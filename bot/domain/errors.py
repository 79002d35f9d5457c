"""Every error the bot raises on purpose, in one tree.

Each message names the bad part in words a Slack user can act on; none ever carries a secret.

    BotError
    ├── InputError                       what a user typed cannot be sent
    │   ├── InvalidPhoneNumber           a number that does not parse or is not a real number
    │   ├── EmptyMessage                 nothing to send
    │   ├── MessageTooLong               more SMS segments than the policy allows
    │   ├── OptedOut                     a phone on the opt-out list (it texted STOP, or an admin put it there)
    │   └── NotVerified                  a profile phone its owner has not verified (``defaults.verified_phones``)
    ├── ServiceUnavailable               Slack (or another service) failed a look-up: tried again later
    ├── ConfigError                      settings or policy file unusable; the bot must not start
    │   ├── SettingsError                environment / .env values (lists every problem)
    │   └── PolicyFileError              policy.yml (names the file and the path inside it)
    └── D7Error                          D7 answered with an error, or did not answer
        ├── D7AuthError                  401: the token is missing or invalid
        ├── D7InsufficientCreditError    402: the account is out of credit
        ├── D7NotFoundError              404: unknown request id (status look-ups)
        │   └── D7InvalidOriginatorError 404: the sender is not a registered WhatsApp number
        ├── D7ValidationError            422: D7 rejected fields of the body (see .errors)
        ├── D7RateLimitedError           429: too many requests (see .retry_after); safe to retry
        ├── D7UnavailableError           502/503/504 or no connection; nothing was sent; safe to retry
        └── D7OutcomeUnknownError        the request went out but no usable answer came back:
                                         the text may or may not have been sent; never resend blindly

D7 errors carry the HTTP status, D7's code and message, and the raw ``detail`` D7 returned. Each D7 error class has
a stable ``kind`` (what the send log stores); ``d7_error`` rebuilds the error from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


class BotError(Exception):
    """Base of every error the bot raises on purpose."""


class InputError(BotError):
    """Something a user typed cannot be sent as it is."""


def inert(text: str) -> str:
    """Someone's text, quoted in a message the bot writes, made unable to carry chat markup: ``<`` and ``>``
    become ``‹`` and ``›``. Problems mix the bot's own mentions (``<@U…>``, shown as names) with what people typed
    or put in their profile, which must never become a live mention."""
    return text.replace("<", "‹").replace(">", "›")


class InvalidPhoneNumber(InputError):
    """A recipient that is not a valid phone number; ``raw`` is the input as typed."""

    def __init__(self, raw: str, reason: str) -> None:
        self.raw = raw
        self.reason = reason
        super().__init__(f"'{inert(raw)}' is not a valid phone number: {reason}")


class EmptyMessage(InputError):
    """The message has no text."""

    def __init__(self) -> None:
        super().__init__("the message is empty")


class MessageTooLong(InputError):
    """The text needs more SMS segments than allowed."""

    def __init__(self, segments: int, max_segments: int, encoding: str) -> None:
        self.segments = segments
        self.max_segments = max_segments
        self.encoding = encoding
        super().__init__(f"the message needs {segments} SMS segments ({encoding}); the limit is {max_segments}")


class OptedOut(InputError):
    """A phone on the opt-out list: it gets no texts. ``phone``: its E.164 number; the message names it as the
    policy shows numbers."""

    def __init__(self, phone: str, message: str) -> None:
        self.phone = phone
        super().__init__(message)


class NotVerified(InputError):
    """A phone from a Slack profile whose owner has not verified it: it gets no texts until they do. ``user_id``:
    whose profile gave it; ``phone``: its E.164 number."""

    def __init__(self, user_id: str, phone: str, message: str) -> None:
        self.user_id = user_id
        self.phone = phone
        super().__init__(message)


class ServiceUnavailable(BotError):
    """A service the bot needs failed for a reason that may pass; the message names it in plain words."""


class ConfigError(BotError):
    """Configuration the bot cannot start with."""


class SettingsError(ConfigError):
    """Bad or missing settings; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"configuration error ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in a policy file, at a path such as ``rules[1].senders[0]``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PolicyFileError(ConfigError):
    """The policy file cannot be used; names the file and every problem's path inside it."""

    def __init__(self, file: str, problems: Sequence[PolicyProblem]) -> None:
        self.file = file
        self.problems = list(problems)
        super().__init__("\n".join(f"{file}: {p}" for p in self.problems))


class D7Error(BotError):
    """D7 answered with an error or did not answer; base of all D7 failures."""

    kind: ClassVar[str] = "d7_error"  # stable: stored in the send log, never renamed
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        detail: Any = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.http_status = http_status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after  # seconds D7 asked us to wait (Retry-After), if it said
        super().__init__(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(http_status={self.http_status!r}, code={self.code!r}, message={self.message!r})"


class D7AuthError(D7Error):
    """401: the D7 token is missing or invalid."""

    kind = "auth"


class D7InsufficientCreditError(D7Error):
    """402: the D7 account is out of credit."""

    kind = "insufficient_credit"


class D7NotFoundError(D7Error):
    """404: D7 does not know this request id (or resource)."""

    kind = "not_found"


class D7InvalidOriginatorError(D7NotFoundError):
    """404 INVALID_WHATSAPP_ORIGINATOR: the sender is not a registered WhatsApp number."""

    kind = "invalid_originator"


@dataclass(frozen=True)
class FieldError:
    """One entry of a 422 answer: where (``loc``), what (``msg``) and the error ``type``."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    def __str__(self) -> str:
        where = ".".join(str(part) for part in self.loc)
        return f"{where}: {self.msg}" if where else self.msg


class D7ValidationError(D7Error):
    """422: D7 rejected parts of the request body; ``errors`` says which."""

    kind = "validation"

    def __init__(self, message: str, *, errors: Sequence[FieldError], **kwargs: Any) -> None:
        self.errors = list(errors)
        super().__init__(message, **kwargs)


class D7RateLimitedError(D7Error):
    """429: D7 asked us to slow down; nothing was processed, so retrying is safe."""

    kind = "rate_limited"
    retryable = True


class D7UnavailableError(D7Error):
    """502/503/504 or no connection could be made: nothing was sent, so retrying is safe."""

    kind = "unavailable"
    retryable = True


class D7OutcomeUnknownError(D7Error):
    """The request reached D7 but no usable answer came back; the text may have gone out."""

    kind = "outcome_unknown"


_D7_ERRORS: dict[str, type[D7Error]] = {
    name: cls
    for cls in (
        D7Error,
        D7AuthError,
        D7InsufficientCreditError,
        D7NotFoundError,
        D7InvalidOriginatorError,
        D7ValidationError,
        D7RateLimitedError,
        D7UnavailableError,
        D7OutcomeUnknownError,
    )
    for name in (cls.kind, cls.__name__)  # the class name: what versions before migration 0006 stored
}


def kind_of(exc: BaseException) -> str:
    """What failed, for a log line or a health check: the error's kind, never its message (a database error's
    message may quote the statement's values). A wrapped driver error (SQLAlchemy's ``.orig``) names the driver's."""
    cause = getattr(exc, "orig", None)
    return type(cause).__name__ if cause is not None else type(exc).__name__


def d7_error(
    kind: str,
    message: str,
    *,
    http_status: int | None = None,
    code: str | None = None,
    otherwise: type[D7Error] = D7Error,
) -> D7Error:
    """The error a stored ``kind`` names; ``otherwise`` for a kind this version does not know."""
    cls = _D7_ERRORS.get(kind, otherwise)
    if cls is D7ValidationError:
        return D7ValidationError(message, errors=[], http_status=http_status, code=code)
    return cls(message, http_status=http_status, code=code)
