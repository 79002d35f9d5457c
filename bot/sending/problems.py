"""What admission says when a request cannot be sent: each problem with the part of the request it is about, so
the outbox lists them in one refusal and the compose form shows each on its field, in the same words."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.domain.errors import InputError
from bot.domain.models import RecipientRef
from bot.domain.policy import Decision, Dimension
from bot.domain.sends import Refusal, RefusalKind


class Part(StrEnum):
    """The part of a request a problem is about."""

    TEXT = "text"  # the message: empty, or too long for its via (``Problem.error`` says which)
    TEMPLATE = "template"  # the WhatsApp template: not this sender's, its values' count, its filled-in length
    PARAMETER = "parameter"  # one of the template's values (``Problem.index``)
    RECIPIENTS = "recipients"  # nobody named at all
    RECIPIENT = "recipient"  # one reference that cannot be texted (``Problem.ref``, ``Problem.error``)
    CHANNEL = "channel"  # its sender is not in the conversation, or the bot cannot see who is
    POLICY = "policy"  # the policy says no (``Problem.dimension``; a recipient it refuses: ``Problem.ref``)


@dataclass(frozen=True)
class Problem:
    """One reason a request cannot be sent as asked, in the requester's words (``text``)."""

    part: Part
    text: str
    denied: bool = False  # the policy refuses it (else: what was given cannot be sent)
    dimension: Dimension | None = None  # POLICY: what the policy refused
    ref: RecipientRef | None = None  # the recipient at fault, as the requester named it
    error: InputError | None = None  # the error behind the words, for a form that words it its own way
    index: int | None = None  # PARAMETER: which of the template's values
    # RECIPIENT: a member of a group the request named (a contact group, a user group) that cannot be texted and is
    # left out of the send, which goes to the others: no reason to refuse it, but its thread says so.
    left_out: bool = False

    def __str__(self) -> str:
        return self.text

    @classmethod
    def unusable(cls, ref: RecipientRef, error: InputError) -> Problem:
        """A recipient that cannot be texted: the reference as given and the error that names it."""
        return cls(Part.RECIPIENT, str(error), ref=ref, error=error)

    @classmethod
    def opted_out(cls, ref: RecipientRef, error: InputError, *, left_out: bool) -> Problem:
        """A phone on the opt-out list: the request is refused when it named it (a number, a person), and sent to
        the others when it came with a group (``left_out``)."""
        return cls(Part.RECIPIENT, str(error), ref=ref, error=error, left_out=left_out)

    @classmethod
    def refused(cls, decision: Decision, ref: RecipientRef | None = None) -> Problem:
        """The policy's denial; ``ref``: the recipient it refused, when it refused one."""
        return cls(Part.POLICY, decision.reason, denied=True, dimension=decision.dimension, ref=ref)


@dataclass(frozen=True)
class Problems:
    """Why a request cannot be sent, every problem found; or (``in_time`` False) that Slack's look-ups did not all
    answer within the time given, so only what needs none was checked (then ``found`` may be empty)."""

    found: tuple[Problem, ...]
    in_time: bool = True

    @property
    def refusing(self) -> tuple[Problem, ...]:
        """The problems that refuse the request (group members left out do not)."""
        return tuple(p for p in self.found if not p.left_out)

    @property
    def refusal(self) -> Refusal:
        """The problems as one refusal: the policy's when it is all the policy's, else what to fix."""
        denied = bool(self.found) and all(p.denied for p in self.found)
        return Refusal(RefusalKind.DENIED if denied else RefusalKind.INVALID, tuple(p.text for p in self.found))
