"""The bot's own texts to a phone that wrote to it: the one confirming its STOP (or its START), and the HELP answer.

Each is an intent in the outbox like any send, under an idempotency key made of the inbound message's id
(``keys.answer``), so it goes once, also across a restart or a second try, and its story is told where the phone
was texted from. The policy's rules do not decide it (nobody in Slack asked: the phone wrote to the bot) and no
budget counts it; the opt-out list still holds, but for the text that confirms a STOP.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain import keys
from bot.domain.inbound import Asks
from bot.domain.models import Origin, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.phone import PhoneNumber
from bot.domain.policy import Policy
from bot.domain.ports import OptOutList
from bot.domain.sends import Checked, Refusal, RefusalKind
from bot.sending import texts

ANSWER_RULE = "inbound"  # an answer's rule, as the send log and the metrics name it
# The surface an answer is recorded under: its story is told in the thread its origin names, like a message
# forwarded by "Text this message" (models.Surface has no member of its own for it).
ANSWER_SURFACE = Surface.MESSAGE


@dataclass(frozen=True)
class Where:
    """Where a phone's text is told in Slack: a channel, and the thread of the send that texted it (None: a new
    message in the channel). ``send_id``: that send."""

    channel_id: str
    thread_ts: str | None = None
    send_id: str | None = None


def answer_sender(policy: Policy, last_sender: str | None) -> str | None:
    """Who answers a phone: the sender that last texted it, else the policy's first SMS sender (None: neither)."""
    if last_sender is not None and last_sender in policy.senders:
        return last_sender
    return next((name for name, s in policy.senders.items() if s.via is Via.SMS), None)


def answer_request(
    policy: Policy, inbound_id: str, asks: Asks, word: str, phone: str, sender: str, origin: Origin
) -> SendRequest:
    """The intent of the bot's answer to what ``phone`` texted (``word``: the keyword, as a key's last part)."""
    text = {
        Asks.STOP: texts.stop_confirmation(),
        Asks.START: texts.start_confirmation(),
    }.get(asks, policy.inbound.help_text)
    return SendRequest(
        via=policy.senders[sender].via,
        origin=origin,
        recipients=(RecipientRef(RefKind.NUMBER, phone),),
        text=text,
        idempotency_key=keys.answer(inbound_id, f"{asks.value}:{word.upper()[:16]}"),
        sender=sender,
    )


def answering(request: SendRequest) -> tuple[Asks, str] | None:
    """What an answer's request answers (and the word the phone texted); None when it is no answer."""
    key = request.idempotency_key
    if not keys.is_answer(key):
        return None
    parts = key.split(":")
    try:
        return Asks(parts[-2]), parts[-1]
    except (ValueError, IndexError):
        return None


async def check_answer(policy: Policy, optouts: OptOutList | None, request: SendRequest) -> Checked | Refusal:
    """An answer as the outbox checks it: its sender still in the policy, its phone not opted out (but for the STOP
    confirmation). Nothing else of the policy applies."""
    answered = answering(request)
    sender = policy.senders.get(request.sender or "")
    if sender is None or answered is None or len(request.recipients) != 1:
        return Refusal(RefusalKind.DENIED, (texts.unknown_sender(request.sender or ""),))
    phone = PhoneNumber(request.recipients[0].value)
    if answered[0] is not Asks.STOP and optouts is not None:
        listed = (await optouts.opted_out([phone.e164])).get(phone.e164)
        if listed is not None:
            how = texts.opt_out_how(listed.way.value, listed.by)
            shown = phone.display(policy.defaults.show_numbers)
            return Refusal(RefusalKind.INVALID, (texts.opted_out(shown, how),))
    return Checked(
        rule=ANSWER_RULE,
        sender=request.sender or "",
        originator=sender.originator,
        recipients=(phone,),
        text=request.text,
    )
