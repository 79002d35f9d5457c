"""Every word the bot says in Slack, and the Block Kit it says it with. Pure functions, no I/O.

User text is only ever shown inside ``rich_text`` elements (rendered literally) or escaped, so ``<!channel>`` or
``<@U…>`` in a message is displayed, never acted on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from bot.domain import patterns
from bot.domain.alerts import describe_window
from bot.domain.budgets import describe_budget, usage_line
from bot.domain.clock import utc_now
from bot.domain.delivery import Delivery, RecipientDelivery, delivery_of, e164_of
from bot.domain.encoding import analyze
from bot.domain.errors import (
    D7AuthError,
    D7Error,
    D7InsufficientCreditError,
    D7InvalidOriginatorError,
    D7NotFoundError,
    D7OutcomeUnknownError,
    D7RateLimitedError,
    D7UnavailableError,
    D7ValidationError,
    EmptyMessage,
    InputError,
    InvalidPhoneNumber,
    MessageTooLong,
    ServiceUnavailable,
)
from bot.domain.inbound import OptOut, OptOutWay, Unanswered
from bot.domain.models import AlertResolution, AlertSummary, EscalationStep, RefKind, StatusReport, Surface, Via
from bot.domain.oncall import Override, Shift
from bot.domain.phone import NumberDisplay, PhoneNumber
from bot.domain.policy import (
    GROUP_PREFIX,
    REGION_PREFIX,
    SCHEDULE_PREFIX,
    USERGROUP_ID,
    WILDCARD,
    Policy,
    Rule,
    channel_templates,
)
from bot.domain.ports import Balance
from bot.domain.sends import (
    NotSent,
    NotSentReason,
    Outcome,
    PartState,
    PreparedSend,
    Refusal,
    RefusalKind,
    SendRecord,
)
from bot.domain.templates import Template, window_closed
from bot.sending.answers import answering
from bot.sending.home import AdminView, Coverage, RecentSend, RuleView, YourShifts
from bot.sending.oncall import Duty
from bot.slack.markup import escape

Block = dict[str, Any]
QUOTE_LIMIT = 2900  # stay under Slack's 3,000-character limits for one element
SECTION_LIMIT = 3000  # Slack's limit for a section's text (and each field): over it, the post is refused
TEXT_LIMIT = 3000  # the top-level ``text`` we send: a notification's fallback (Slack refuses 40,000+)
LIST_BUDGET = 1500  # characters a list of people or numbers may take inside one line before "and N more"

_SHOWN_MENTION = patterns.compile(r"&lt;(@[UW][A-Z0-9]{2,}|#[CG][A-Z0-9]{2,})&gt;")
_SHOWN_GROUP = patterns.compile(r"&lt;!subteam\^(S[A-Z0-9]{2,})(?:\|([^&]*))?&gt;")


def fit(text: str, limit: int = SECTION_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, ending with "…" when cut; never inside an ``&amp;``-style escape or a
    ``<…>`` entity, which Slack would show broken."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp, semi = cut.rfind("&"), cut.rfind(";")
    if amp > semi:  # "&lt" cut before its ";"
        cut = cut[:amp]
    opened, closed = cut.rfind("<"), cut.rfind(">")
    if opened > closed:  # "<@U123" cut before its ">"
        cut = cut[:opened]
    return cut.rstrip() + "…"


def listing(items: Sequence[str], budget: int = LIST_BUDGET, *, sep: str = ", ", rest: str = " and {n} more") -> str:
    """``a, b, c and 198 more``: as many ``items`` as fit in ``budget`` characters, then ``rest`` with how many were
    left out. At least the first item is shown (cut to fit), so a long list never reads as "and 200 more" alone."""
    shown: list[str] = []
    used = 0
    for i, item in enumerate(items):
        left = len(items) - i - 1
        tail = len(rest.format(n=left)) if left else 0
        cost = len(item) + (len(sep) if shown else 0)
        if shown and used + cost + tail > budget:
            return sep.join(shown) + rest.format(n=len(items) - i)
        shown.append(item if shown else fit(item, max(budget - tail, 20)))
        used += cost
    return sep.join(shown)


def shown_markup(text: str, *, groups: bool = True) -> str:
    """``text`` escaped, except the people, channels and user groups the bot itself names as ``<@U…>``, ``<#C…>``,
    ``<!subteam^S…>``: Slack shows those as names. ``@channel``, ``@here`` and links stay escaped; what people
    typed reaches a problem only made ``inert`` (``bot.domain.errors``), so it never matches. ``groups=False`` (posts
    everyone in a channel sees): a user group shows by its handle or ID instead, as its mention would notify every
    member."""
    shown = _SHOWN_MENTION.sub(lambda m: f"<{m.group(1)}>", escape(text))
    if groups:
        return _SHOWN_GROUP.sub(lambda m: f"<!subteam^{m.group(1)}>", shown)
    return _SHOWN_GROUP.sub(lambda m: m.group(2) or f"the user group `{m.group(1)}`", shown)


def template_lines(policy: Policy, channel_id: str) -> list[str]:
    """For ``help``: one line per approved WhatsApp template a rule for this channel allows, with its parameters
    and text (whether the asker may use it is decided when they send)."""
    lines = []
    for name, alias in channel_templates(policy, channel_id):
        template = policy.senders[name].templates[alias]
        params = " | ".join(f"<{p.name}>" for p in template.params)
        shown = f" “{escape(template.text)}”" if template.text else ""
        lines.append(f"• `template:{alias} <recipients>{' | ' + params if params else ''}` ({name}){shown}")
    return lines


def usage(command: str, templates: Sequence[str] = ()) -> str:
    """The help text for ``/sms`` or ``/whatsapp`` (with the WhatsApp templates of the policy)."""
    via = "an SMS" if command == "/sms" else "a WhatsApp message"
    template_help = ""
    if templates:
        template_help = (
            "WhatsApp delivers free text only to people who wrote to the business number in the last 24 hours; "
            "anyone else needs an approved template, its values in order, separated by `|` (a value cannot hold one):\n"
            + "\n".join(fit(line, 300) for line in templates[:20])
            + (f"\n… and {len(templates) - 20} more" if len(templates) > 20 else "")
            + "\n"
        )
    return (
        f"*{command}* sends {via} through D7.\n"
        f"`{command} <recipients> <message>`\n"
        "Recipients come first, separated by spaces or commas:\n"
        "• phone numbers: `+14155550100` (numbers without + are read in the policy's region)\n"
        "• people: `@alice` (the phone in their Slack profile)\n"
        "• user groups: `@oncall` (each member's profile phone)\n"
        "• contact groups from the policy: `group:oncall-db`\n"
        "• whoever is on call for a schedule of the policy: `schedule:db-primary`\n"
        f"Example: `{command} +14155550100 @alice Disk full on db-1, please check`\n"
        f"Type `{command}` alone for a form that shows what the text will cost before you send it.\n"
        f"`{command} status <request_id>` asks D7 whether each phone got a text you sent.\n"
        f"`{command} oncall` shows who is on call; `{command} oncall <schedule>` its next shifts; "
        f"`{command} oncall take <schedule> [2h]` and `{command} oncall give <schedule> @person [2h]` change it.\n"
        f"Admins: `{command} optout <number>` and `{command} optin <number>` keep a phone from texts, or let it be "
        "texted again (phones opt out themselves by texting STOP).\n"
        f"{template_help}"
        "The result is posted in a thread under the message the bot posts in this channel."
    )


def section(text: str) -> Block:
    """A mrkdwn section; cut to Slack's limit as a last resort (callers keep their lists within it)."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": fit(text)}}


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": fit(text)}]}


def plain(text: str) -> tuple[str, list[Block]]:
    """The shortest form of a message: its fallback text alone in one section. What the bot posts when Slack
    refused the full message's blocks (it should never have to)."""
    return fit(text, TEXT_LIMIT), [section(text)]


def quote(text: str) -> Block:
    """The user's text as a quote that Slack renders literally (no mentions, links or formatting)."""
    shown = text if len(text) <= QUOTE_LIMIT else f"{text[:QUOTE_LIMIT]}… ({len(text) - QUOTE_LIMIT} more characters)"
    return {
        "type": "rich_text",
        "elements": [{"type": "rich_text_quote", "elements": [{"type": "text", "text": shown}]}],
    }


def _refusal_title(refusal: Refusal, alert: bool) -> str:
    if refusal.kind is RefusalKind.UNAVAILABLE:
        what = "Alert not texted" if alert else "Not sent"
        return f":x: *{what}:* Slack did not answer the bot's look-ups in time. Nothing was sent."
    if refusal.kind is RefusalKind.OVER_BUDGET:
        what = "Alert not texted" if alert else "Not sent"
        return f":hourglass: *{what}:* over budget. Nothing was sent."
    if alert:
        if refusal.kind == RefusalKind.INVALID:
            return ":warning: *Alert not texted:* nobody could be reached."
        return ":no_entry: *Alert not texted.*"
    if refusal.kind == RefusalKind.DENIED:
        return ":no_entry: *Not sent:* the policy does not allow this."
    if refusal.kind is RefusalKind.UNRECORDED:
        return ":x: *Not sent:* the bot could not record your request in time. Nothing was sent."
    return ":warning: *Not sent:* please fix the following and try again."


PROBLEM_LIMIT = 300  # one problem's line: a pasted essay as a "phone number" is cut


def refusal(r: Refusal, alert: bool = False) -> tuple[str, list[Block]]:
    """Why nothing was sent: ephemeral to the requester, or (``alert``) in the alert's thread.

    People and channels show as Slack shows them (an ephemeral mention notifies nobody); in an alert's thread a
    user group stays unrendered, so its members are not all notified. 60 problems or 1,000: the first that fit,
    then how many more."""
    lines = [f"• {fit(shown_markup(p, groups=not alert), PROBLEM_LIMIT)}" for p in r.problems]
    what = "Alert not texted" if alert else "Not sent"
    return (
        fit(f"{what}: {'; '.join(shown_markup(p, groups=not alert) for p in r.problems)}", TEXT_LIMIT),
        [
            section(_refusal_title(r, alert)),
            section(listing(lines, SECTION_LIMIT - 40, sep="\n", rest="\n• … and {n} more problems")),
        ],
    )


def recipients_text(send: PreparedSend, numbers: Iterable[PhoneNumber] | None = None, budget: int = LIST_BUDGET) -> str:
    """``+1 415 ••• 0100 (@alice), +1 415 ••• 0101 and 198 more``: the send's recipients (or ``numbers``), shown
    per policy, as many as fit in ``budget`` characters."""
    shown = [_one(send, n.e164) for n in (send.recipients if numbers is None else numbers)]
    return listing(shown, budget)


def _what(send: PreparedSend) -> str:
    if send.request.template is not None:
        return f"the WhatsApp template `{escape(send.request.template.alias)}`"
    return "an SMS" if send.via is Via.SMS else "a WhatsApp message"


class SizeLine(Enum):
    """Where a text's size is shown; each place has its own order and markup."""

    CARD = "card"  # mrkdwn context line of the announcement and result: encoding first (the head names the via)
    PREVIEW = "preview"  # the modal's plain_text preview as the user types: length first, the via named


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def template_preview(template: Template, alias: str, values: Sequence[str], recipients: int) -> str:
    """The compose form's preview of a template: its text with what is typed so far (``{{name}}`` where nothing
    is), its length and the recipients. Plain text: shown as typed."""
    filled = [
        v.strip() or f"{{{{{p.name}}}}}"
        for p, v in zip(template.params, [*values, *[""] * len(template.params)], strict=False)
    ]
    text = template.render(filled, alias)
    return fit(f"Preview: {text}\n{len(text)} characters · WhatsApp template · {_count(recipients, 'recipient')}", 2000)


def window_closed_warning(shown: Sequence[str]) -> str:
    """The compose form's warning (plain text) for numbers free WhatsApp text will not reach."""
    who = listing(list(shown), 600)
    return (
        f"⚠ Free text did not reach {who} in the last 24 hours: WhatsApp's window is closed until they write to "
        "you. Choose a template under Message type."
    )


def text_size(text: str, via: Via, recipients: int, line: SizeLine) -> str:
    """What ``text`` costs sent to ``recipients`` phones: the one description of a text's size.

    ``CARD``: ``GSM-7 · 1 segment · 42 characters · 2 recipients`` (WhatsApp: ``42 characters · 2 recipients``).
    ``PREVIEW``: ``42 characters · Unicode (because of é) · 1 segment · 2 recipients``
    (WhatsApp: ``42 characters · WhatsApp · 2 recipients``); an empty text asks for one.
    """
    count = _count(recipients, "recipient")
    preview = line is SizeLine.PREVIEW
    if preview and not text.strip():
        return f"Type a message to see its length and cost · {count}"
    characters = f"{len(text)} characters"
    info = analyze(text) if via is Via.SMS and text else None
    if info is None:  # WhatsApp (no segments), or an empty text on a card
        return " · ".join([characters, via.label, count] if preview else [characters, count])
    encoding = info.encoding.label
    if info.unicode_chars:
        forced = " ".join(info.unicode_chars[:8])
        encoding += f" (because of {forced if preview else escape(forced)})"  # plain_text shows it literally
    segments = _count(info.segments, "segment")
    return " · ".join([characters, encoding, segments, count] if preview else [encoding, segments, characters, count])


def sizing(send: PreparedSend) -> str:
    """The size line of a send's announcement and result cards."""
    return text_size(send.text, send.via, len(send.recipients), SizeLine.CARD)


def announcement(send: PreparedSend) -> tuple[str, list[Block]]:
    """The parent message: who is sending what, via which sender, to whom."""
    req = send.request
    head = (
        f":outbox_tray: <@{req.user_id}> is sending {_what(send)} as *{escape(send.originator)}* "
        f"(`{escape(send.sender)}`) to {recipients_text(send)}"
    )
    if (answered := answering(req)) is not None:  # the bot answers a phone that texted it
        head = phone_answer_head(send, answered[0].value, answered[1])
    if req.schedule_time is not None:
        head += f", scheduled for {_date(req.schedule_time)}"
    if req.origin.surface is Surface.WORKFLOW:
        # The person is the one who ran it, as Slack says; the run tells an admin which workflow (its activity log).
        head += f" (a workflow's step, run `{escape(req.workflow)}`)" if req.workflow else " (a workflow's step)"
    what = "An SMS" if send.via is Via.SMS else "A WhatsApp message"
    if req.template is not None:
        what = f"The WhatsApp template {escape(req.template.alias)}"
    text = fit(f"{what} from <@{req.user_id}> to {len(send.recipients)} recipient(s): {escape(send.text)}", TEXT_LIMIT)
    return text, [section(head), quote(send.text), context(sizing(send)), *_left_out(send)]


def _left_out(send: PreparedSend) -> list[Block]:
    """A person's group send: the members it leaves out (opted out), and why."""
    if not send.unreached or send.alert is not None:
        return []
    problems = [fit(shown_markup(p, groups=False), PROBLEM_LIMIT) for p in send.unreached]
    return [section(":no_bell: *Left out:* " + listing(problems, sep="; "))]


def _date(when: datetime) -> str:
    fallback = when.strftime("%Y-%m-%d %H:%M %Z").strip()
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def retrying(error: D7Error) -> str:
    status = f" (HTTP {error.http_status})" if error.http_status else ""
    if isinstance(error, D7RateLimitedError):
        return f":hourglass_flowing_sand: D7 asked us to slow down{status} — retrying. Nothing has been sent yet."
    return f":hourglass_flowing_sand: D7 unavailable{status} — retrying. Nothing has been sent yet."


def explain(error: D7Error, send: PreparedSend) -> str:
    """A D7 failure in plain words: what happened, whether anything went out, and who can fix it."""
    status = f" (HTTP {error.http_status})" if error.http_status else ""
    if isinstance(error, D7AuthError):
        return (
            f":x: *Not sent:* D7 refused the bot's API token{status}. "
            "An admin must fix `D7_API_TOKEN` in the bot's settings."
        )
    if isinstance(error, D7InsufficientCreditError):
        return (
            f":x: *Not sent:* the D7 account is out of credit{status}. An admin must top it up at app.d7networks.com."
        )
    if isinstance(error, D7InvalidOriginatorError):
        return (
            f":x: *Not sent:* sender `{escape(send.sender)}` ({escape(send.originator)}) is not a registered "
            f"WhatsApp number on the D7 account{status}. An admin must register it or fix the policy."
        )
    if isinstance(error, D7ValidationError):
        return f":x: *Not sent:* D7 said the request was invalid{status}: {fit(escape(str(error)), 1000)}"
    if isinstance(error, D7OutcomeUnknownError):
        return (
            ":warning: *Outcome unknown:* D7 did not answer, so the text may or may not have gone out. "
            "Check with the recipients before sending it again."
        )
    if isinstance(error, D7RateLimitedError | D7UnavailableError):
        tries = "after several attempts" if error.retryable else ""
        return (
            f":x: *Not sent:* D7 was unavailable{status} {tries}. Nothing was sent; please try again later."
        ).replace("  ", " ")
    if isinstance(error, D7NotFoundError):
        return f":x: *Not sent:* D7 answered “not found”{status}: {fit(escape(error.message), 1000)}"
    return f":x: *Not sent:* D7 answered with an error{status}: {fit(escape(error.message), 1000)}"


def outcome(send: PreparedSend, result: Outcome, statuses: Sequence[RecipientDelivery] = ()) -> tuple[str, list[Block]]:
    """The thread reply with D7's verdict (and, once reports came in, each recipient's delivery status)."""
    if result.error is not None:
        line = explain(result.error, send)
        return line, [section(line)]
    r = result.result
    if r is None:  # an Outcome always carries one of the two; say so rather than crash
        line = ":warning: *Outcome unknown:* the bot lost track of this send. Check before sending it again."
        return line, [section(line)]
    created = f" · created {_date(r.created_at)}" if r.created_at else ""
    if r.dry_run:
        head = (
            ":test_tube: *Dry run — nothing was sent.* `D7_API_TOKEN` is not set, so the bot only pretends. "
            f"request_id `{escape(r.request_id)}`"
        )
    elif r.accepted:
        head = f":white_check_mark: *Accepted by D7* · {request_ids(result)}{created}"
    else:
        head = (
            f":x: *Rejected by D7* · request_id `{escape(r.request_id)}`{created}. Nothing was sent; "
            "check the numbers and the sender with your D7 account."
        )
    return head, [section(head), context(sizing(send)), *parts_blocks(send, result), *delivery_blocks(send, statuses)]


REQUEST_IDS_BUDGET = 600  # a send in many requests: its request ids, within the card's first line


def request_ids(result: Outcome) -> str:
    """``request_id `…``` of a send in one request; of one in several, how many and their ids as far as they fit."""
    ids = result.request_ids
    if len(result.parts) <= 1 or len(ids) <= 1:
        return f"request_id `{escape(ids[0] if ids else '')}`"
    shown = listing([f"`{escape(i)}`" for i in ids], REQUEST_IDS_BUDGET)
    return f"{len(result.parts)} requests · request_ids {shown}"


def parts_blocks(send: PreparedSend, result: Outcome) -> list[Block]:
    """A send in several requests of which one failed: which, why, and who got nothing (or may have)."""
    bad = next((i for i, p in enumerate(result.parts) if p.state is not PartState.ACCEPTED), None)
    if bad is None:
        return []
    part, which = result.parts[bad], f"request {bad + 1} of {len(result.parts)}"
    later = sum(p.count for p in result.parts[bad + 1 :])
    sent = sum(p.count for p in result.parts if p.state is PartState.ACCEPTED)
    its = f"its {_count(part.count, 'recipient')}"
    if part.state is PartState.UNKNOWN:
        what = (
            f":warning: *Not all sent:* D7 did not answer {which}, so {its} may or may not have been texted: check "
            f"with them before sending to them again ({fit(escape(part.error or 'no details'), 300)})."
        )
    elif part.state is PartState.REJECTED:
        what = f":x: *Not all sent:* D7 rejected {which} (`{escape(part.request_id or '')}`): {its} got nothing."
    else:
        what = (
            f":x: *Not all sent:* {which} failed ({fit(escape(part.error or 'no details'), 500)}): {its} got nothing."
        )
    if later:
        what += f" The {_count(later, 'recipient')} after it were not sent."
    what += f" {_count(sent, 'recipient')} were accepted."
    return [section(what)]


# ------------------------------------------------------------ alerts


def _alert_notes(send: PreparedSend) -> list[Block]:
    """Who was on call for the schedules it went to; who an alert did not reach, and why: held back for the summary,
    or not resolvable."""
    notes = [on_call_note(schedule, name) for schedule, name in send.on_call.items()]
    if send.held:
        when = f" at {_date(send.held_until)}" if send.held_until else " at the end of their window"
        notes.append(
            f":package: Held back for {recipients_text(send, send.held)}: the rule's per-phone limit is reached. "
            f"They get one summary text{when}."
        )
    if send.unreached:
        problems = [fit(shown_markup(p, groups=False), PROBLEM_LIMIT) for p in send.unreached]
        notes.append(":warning: *Not reached:* " + listing(problems, sep="; "))
    return [section(n) for n in notes]


def on_call_note(schedule: str, name: str) -> str:
    """Who was on call for a schedule an alert went to (the thread names them)."""
    return f":pager: On call for *{escape(schedule)}*: @{escape(name)}"


def alert_outcome(
    send: PreparedSend, result: Outcome, statuses: Sequence[RecipientDelivery] = ()
) -> tuple[str, list[Block]]:
    """The reply in an alert's thread: texted (to whom, request_id, the exact text), or why not."""
    summary = isinstance(send.alert, AlertSummary)
    what = "Summary" if summary else "Alert"
    if isinstance(send.alert, EscalationStep):
        what = f"Escalation step {(send.alert.step or 0) + 1}"
    if isinstance(send.alert, AlertResolution):
        what = "RESOLVED"
    rule = f"rule *{escape(send.rule)}*"
    if result.error is not None:
        line = explain(result.error, send)
        if not isinstance(result.error, D7OutcomeUnknownError):
            line += f"\nNobody was texted: {recipients_text(send, send.recipients)} did not get this {what.lower()}."
        return line, [section(line), quote(send.text), context(rule), *_alert_notes(send)]
    r = result.result
    if r is None:
        line = ":warning: *Outcome unknown:* the bot lost track of this send. Check before sending it again."
        return line, [section(line)]
    to = f"{recipients_text(send, send.recipients)} as *{escape(send.originator)}* (`{escape(send.sender)}`)"
    if r.dry_run:
        head = (
            f":test_tube: *Dry run — nothing was sent.* {what} would be texted to {to}. "
            f"request_id `{escape(r.request_id)}`"
        )
    elif r.accepted:
        head = f":white_check_mark: *{what} texted* to {to} · {request_ids(result)}"
    else:
        head = (
            f":x: *Rejected by D7* · request_id `{escape(r.request_id)}`. Nobody was texted; "
            "check the numbers and the sender with your D7 account."
        )
    blocks = [section(head), quote(send.text), context(f"{rule} · {sizing(send)}{_linked(send)}"), *_alert_notes(send)]
    return head, [*blocks, *parts_blocks(send, result), *delivery_blocks(send, statuses)]


def _linked(send: PreparedSend) -> str:
    """Said under a text whose phones each got their own action link after it."""
    if not send.endings:
        return ""
    return " · each phone's text ends with its own link to acknowledge the alert"


def alert_not_sent(send: PreparedSend, why: NotSent) -> tuple[str, list[Block]]:
    """The reply in an alert's thread when it was not texted on purpose: a repeat, or every phone over its limit."""
    line = _NOT_SENT[why.reason or NotSentReason.REPEAT](send, why)
    held = why.reason in (NotSentReason.QUIET_HOURS, NotSentReason.OVER_LIMIT)
    return line, [section(line), quote(send.text)] if held and send.text else [section(line)]


def _step_acknowledged(send: PreparedSend, why: NotSent) -> str:
    who = acknowledger(why.first, send.show_numbers)
    step = (send.alert.step if isinstance(send.alert, EscalationStep) else None) or 0
    return f":white_check_mark: *Escalation step {step + 1} not sent:* {who} acknowledged the alert."


def _step_resolved(send: PreparedSend, why: NotSent) -> str:
    step = (send.alert.step if isinstance(send.alert, EscalationStep) else None) or 0
    return f":white_check_mark: *Escalation step {step + 1} not sent:* the alert was resolved."


def _resolution_told(send: PreparedSend, why: NotSent) -> str:
    return ":repeat: *Not texted again:* RESOLVED was already texted for this alert."


def _first_where(why: NotSent) -> str:
    first = why.first
    return f" at {_date(first.created_at)} in <#{first.request.channel_id}>" if first is not None else ""


def _acknowledged_repeat(send: PreparedSend, why: NotSent) -> str:
    who = acknowledger(why.first, send.show_numbers)
    return (
        f":white_check_mark: *Not texted again:* {who} acknowledged this alert{_first_where(why)}; "
        f"it is not texted again until it is resolved (rule *{escape(send.rule)}*)."
    )


def _repeat(send: PreparedSend, why: NotSent) -> str:
    window = describe_window(why.window) if why.window else "the window"
    return (
        f":repeat: *Not texted again:* the same alert was forwarded{_first_where(why)}. "
        f"Repeats within {window} are not texted (rule *{escape(send.rule)}*)."
    )


def _quiet_hours(send: PreparedSend, why: NotSent) -> str:
    until = _date(why.quiet_until) if why.quiet_until is not None else "the end of them"
    return (
        f":crescent_moon: *Not texted now:* quiet hours of rule *{escape(send.rule)}* until "
        f"{until}. {recipients_text(send, send.held)} get it then, in one summary text each."
    )


def _over_limit(send: PreparedSend, why: NotSent) -> str:
    window = describe_window(why.window) if why.window else "the window"
    limit = f"{why.limit} alert texts" if why.limit else "their limit of alert texts"
    when = f" at {_date(send.held_until)}" if send.held_until else " at the end of the window"
    return (
        f":package: *Not texted now:* {recipients_text(send, send.held)} already had {limit} in this {window} window "
        f"(rule *{escape(send.rule)}*). This alert will be counted in their summary text{when}."
    )


_NOT_SENT: dict[NotSentReason, Callable[[PreparedSend, NotSent], str]] = {
    NotSentReason.STEP_ACKNOWLEDGED: _step_acknowledged,
    NotSentReason.STEP_RESOLVED: _step_resolved,
    NotSentReason.RESOLUTION_TOLD: _resolution_told,
    NotSentReason.ACKNOWLEDGED: _acknowledged_repeat,
    NotSentReason.REPEAT: _repeat,
    NotSentReason.QUIET_HOURS: _quiet_hours,
    NotSentReason.OVER_LIMIT: _over_limit,
}


# ------------------------------------------------------------ delivery


_DELIVERY_LOOK = {
    Delivery.SCHEDULED: (":clock3:", "scheduled"),
    Delivery.SENT: (":outbox_tray:", "sent, not yet delivered"),
    Delivery.DELIVERED: (":white_check_mark:", "delivered"),
    Delivery.READ: (":eyes:", "read"),
    Delivery.UNDELIVERED: (":x:", "undelivered"),
    Delivery.FAILED: (":x:", "failed"),
}


def delivery_text(status: str, reason: str | None) -> str:
    """``:white_check_mark: delivered``; unknown words are shown as D7 wrote them."""
    delivery = delivery_of(status)
    emoji, label = _DELIVERY_LOOK.get(delivery, (":grey_question:", f"“{escape(status)}” (as D7 reported it)"))
    return f"{emoji} {label}" + (f" ({fit(escape(reason), 200)})" if reason else "")


def _one(send: PreparedSend, e164: str) -> str:
    name = send.names.get(e164)
    shown = PhoneNumber(e164).display(send.show_numbers)
    return f"{shown} (@{escape(name)})" if name else shown


DETAIL_BUDGET = 2600  # the card's per-recipient lines, within one section (3,000) with its heading


def delivery_blocks(send: PreparedSend, statuses: Sequence[RecipientDelivery]) -> list[Block]:
    """Each recipient's latest delivery status, in the order they were sent to; when that does not fit in one
    section (hundreds of recipients), counts by status and the detail of those not reached."""
    if not statuses:
        return []
    known = {s.recipient: s for s in statuses}
    rows: list[tuple[str, RecipientDelivery | None]] = [(n.e164, known.pop(n.e164, None)) for n in send.recipients]
    rows += [(s.recipient, s) for s in known.values()]  # reports for numbers not among the recipients
    lines = [f"{_one(send, e164)}: {_status_of(status)}" for e164, status in rows]
    if sum(len(line) + 1 for line in lines) <= DETAIL_BUDGET:
        return [section("*Delivery*\n" + "\n".join(lines))]
    counts: dict[str, int] = {}
    for _, status in rows:
        label = _label_of(status)
        counts[label] = counts.get(label, 0) + 1
    head = "*Delivery* · " + " · ".join(f"{n} {label}" for label, n in counts.items())
    failed = [f"{_one(send, e164)}: {_status_of(s)}" for e164, s in rows if s is not None and s.delivery.failed]
    if not failed:
        return [section(head)]
    detail = listing(failed, DETAIL_BUDGET - len(head), sep="\n", rest="\n… and {n} more not reached")
    return [section(f"{head}\n*Not reached:*\n{detail}")]


def _status_of(status: RecipientDelivery | None) -> str:
    return delivery_text(status.status, status.reason) if status else ":hourglass: no report yet"


def _label_of(status: RecipientDelivery | None) -> str:
    if status is None:
        return "no report yet"
    return _DELIVERY_LOOK.get(status.delivery, ("", "other"))[1]


def undelivered(send: PreparedSend, failures: Sequence[RecipientDelivery]) -> str:
    """A new thread reply when a recipient was not reached: failure is never only an edited card."""
    who = listing([f"{_one(send, f.recipient)}: {delivery_text(f.status, f.reason)}" for f in failures], sep="; ")
    if send.alert is not None:
        return f":rotating_light: *Not reached:* {who}. This alert did not get to them: page them another way."
    what = "SMS" if send.via is Via.SMS else "WhatsApp message"
    return f":rotating_light: <@{send.request.user_id}> your {what} was not delivered to {who}."


TEMPLATE_INSTEAD = "template_instead"  # the button that opens the form for a template send to those not reached


def undelivered_blocks(
    send: PreparedSend, failures: Sequence[RecipientDelivery], templates: Sequence[str] = ()
) -> tuple[str, list[Block]]:
    """``undelivered``, and when free WhatsApp text failed for a closed 24-hour window, why in plain words, the
    approved templates that would reach them, and a button that opens the form for one."""
    text = undelivered(send, failures)
    blocks = [section(text)]
    closed = [f.recipient for f in failures if window_closed(f.reason)]
    if not closed:
        return text, blocks
    who = listing([_one(send, n) for n in closed], LIST_BUDGET)
    if not templates:
        why = (
            f":hourglass: WhatsApp's 24-hour window is closed for {who}: they have not written to "
            f"{escape(send.originator)} in the last 24 hours, so WhatsApp delivers only approved templates, and "
            f"sender `{escape(send.sender)}` has none this rule allows. An admin can add one to the policy."
        )
        return f"{text} {why}", [*blocks, section(why)]
    names = ", ".join(f"`{escape(t)}`" for t in templates[:20])
    why = (
        f":hourglass: WhatsApp's 24-hour window is closed for {who}: they have not written to "
        f"{escape(send.originator)} in the last 24 hours, so WhatsApp delivers only approved templates. "
        f"Send one instead: {names}."
    )
    # Which send and which template, not the numbers: anyone in the channel can read a button's value.
    value = json.dumps({"id": send.send_id, "t": templates[0]}, separators=(",", ":"))
    button = {
        "type": "button",
        "action_id": TEMPLATE_INSTEAD,
        "text": {"type": "plain_text", "text": "Send a template…"},
        "value": value,
    }
    return f"{text} {why}", [*blocks, section(why), {"type": "actions", "elements": [button]}]


def unknown_note(send: PreparedSend, created_at: datetime) -> str:
    return (
        ":grey_question: *Still unknown:* D7 never answered this send, so it has no request_id, and D7 cannot look "
        "a send up by the bot's own reference. Whether the text went out is for a person to check: ask the "
        f"recipients, or look in the D7 dashboard for messages from {escape(send.originator)} around "
        f"{_date(created_at)}, before sending it again."
    )


def status_report(record: SendRecord, report: StatusReport, show: NumberDisplay) -> tuple[str, list[Block]]:
    """``/sms status <request_id>``: per-recipient status, parts and cost, only for the person who asked."""
    what = "SMS" if report.via is Via.SMS else "WhatsApp"
    head = (
        f"*{what}* request_id `{escape(report.request_id)}` · sent by <@{record.request.user_id}> in "
        f"<#{record.request.channel_id}> {_date(record.created_at)}"
    )
    if report.stage:
        head += f" · stage {escape(report.stage)}"
    lines = []
    for r in report.recipients:
        parts = [delivery_text(r.status, r.reason)]
        if r.parts is not None:
            parts.append(f"{r.parts} part{'s' if r.parts != 1 else ''}")
        if r.cost is not None:
            parts.append(f"cost {escape(str(r.cost))}")
        if r.country:
            parts.append(escape(r.country))
        lines.append(f"{PhoneNumber(e164_of(r.recipient)).display(show)}: " + " · ".join(parts))
    body = listing(lines, DETAIL_BUDGET, sep="\n") or "D7 lists no recipients for this request yet."
    return fit(f"{what} {report.request_id}: " + "; ".join(lines), TEXT_LIMIT), [section(head), section(body)]


def status_not_found(request_id: str) -> str:
    return (
        f":mag: No send with request_id `{escape(request_id)}` was made from this workspace. "
        "Copy the request_id from the result message in the send's thread."
    )


def status_too_often(limit: int, wait: float) -> str:
    return f":hourglass: You asked for {limit} statuses in the last minute. Try again in {max(1, round(wait))} seconds."


def status_not_checked(request_id: str, error: ServiceUnavailable) -> str:
    why = escape(str(error))
    return f":warning: Could not check who may see `{escape(request_id)}` right now ({why}). Try again in a minute."


def status_unavailable(request_id: str, error: D7Error) -> str:
    code = f" (HTTP {error.http_status})" if error.http_status else ""
    return f":warning: D7 could not tell the status of `{escape(request_id)}` right now{code}. Try again in a minute."


def cannot_post_here(channel_id: str) -> str:
    return (
        f"I can't post in <#{channel_id}> (a private channel or a conversation I'm not in), "
        "so the whole story is here, just for you. Invite me to the channel to share results with it."
    )


def dm_note(channel_id: str) -> str:
    """The first line of a notice written to the requester's DM with the app, saying where it belongs."""
    if channel_id.startswith(("D", "U", "W")) or not channel_id:
        return (
            ":speech_balloon: About a text you sent from a direct message (I cannot answer there, so I tell you here)."
        )
    return f":speech_balloon: About a text you sent from <#{channel_id}> (I cannot answer there, so I tell you here)."


def cannot_record() -> str:
    return (
        ":x: *Not sent:* the bot could not record your request (its database is not answering). "
        "Nothing was sent; please try again in a minute."
    )


# ------------------------------------------------------------ the compose form's field errors


def _sentence(text: str) -> str:
    """``the message is empty`` → ``The message is empty.``"""
    text = text.strip()
    return f"{text[:1].upper()}{text[1:]}" + ("" if text.endswith((".", "!", "?")) else ".")


def form_pick_conversation() -> str:
    return "Pick the conversation where the result is posted."


def form_pick_sender() -> str:
    return "Pick a sender."


def form_text_problem(error: InputError) -> str:
    """The message field: empty, or too long for its via (the same check as the command's)."""
    if isinstance(error, EmptyMessage):
        return "Write a message."
    if isinstance(error, MessageTooLong):
        return (
            f"This needs {error.segments} SMS segments ({error.encoding}); the limit is {error.max_segments}. "
            "Shorten it."
        )
    return _sentence(str(error))


def form_recipient_problems(kind: RefKind, errors: Sequence[InputError]) -> str:
    """One recipient field's problems, each named as the command would name it."""
    if kind is RefKind.NUMBER:
        shown = [f"'{e.raw}' ({e.reason})" if isinstance(e, InvalidPhoneNumber) else str(e) for e in errors]
        return "Not valid phone numbers: " + ", ".join(shown)
    if kind is RefKind.USER:
        return "No usable phone: " + "; ".join(str(e) for e in errors)
    return " ".join(_sentence(str(e)) for e in errors)


def form_not_a_member() -> str:
    return "You are not a member of this conversation. Pick one you are in."


def form_no_recipients() -> str:
    return "Add at least one recipient: phone numbers, people or a contact group."


def form_time_in_the_past() -> str:
    return "That time is in the past. Pick a later time, or leave it empty to send now."


def form_broken() -> str:
    return "This form is broken; close it and start again."


def form_slack_unavailable(error: ServiceUnavailable) -> str:
    return f"Nothing was sent: {error}. Try again in a minute."


def form_cannot_record() -> str:
    return "The bot could not record this (its database is not answering). Nothing was sent."


def incomplete_request() -> str:
    return "Not sent: Slack sent an incomplete request. Please try again."


def form_channel_label() -> str:
    """How the policy's reasons name the conversation in the form (``this conversation is not allowed…``)."""
    return "this conversation"


def form_user_label() -> str:
    """How the policy's reasons name the person filling in the form."""
    return "your account"


# ------------------------------------------------------------ the modal when there is nothing to offer


def channel_label(channel_id: str | None) -> str:
    """How the policy's reasons name the channel a modal was opened from (empty: a global shortcut)."""
    return f"<#{channel_id}>" if channel_id else ""


def cannot_send_here(reason: str) -> str:
    return f":no_entry: You cannot send texts here: {reason}."


def ask_an_admin() -> str:
    return "Ask an admin to change the bot's policy file if you need to."


# ------------------------------------------------------------ the compose form: its labels and notices

FORM_TITLE = "Send a text"
FORM_SUBMIT = "Send"
FORM_CANCEL = "Cancel"
FORM_CLOSE = "Close"
FORM_CONVERSATION = "Post the result in"
FORM_VIA = "Send by"
FORM_KIND = "Message type"
FORM_KIND_HINT = "WhatsApp delivers free text only inside the 24-hour window; else use a template"
FORM_FREE_TEXT = "Free text (only people who wrote in the last 24 hours)"
FORM_SENDER = "Sender"
FORM_NUMBERS = "Phone numbers"
FORM_NUMBERS_HINT = "Comma separated, with country code: +14155550100, +442079460000"
FORM_NUMBERS_PLACEHOLDER = "+14155550100"
FORM_PEOPLE = "People (the phone in their Slack profile)"
FORM_CONTACTS = "Contact groups"
FORM_MESSAGE = "Message"
FORM_WHEN = "Send later (optional)"


def form_template_option(alias: str) -> str:
    return f"Template: {alias}"


def form_sender_option(name: str, originator: str) -> str:
    return f"{name} — {originator}"


def form_contacts_option(name: str, numbers: int) -> str:
    return f"{name} ({numbers})"


def form_param_label(index: int, name: str) -> str:
    """A template parameter's input: its placeholder as the template writes it, then its name."""
    return f"{{{{{index + 1}}}}} {name}"


def loading() -> str:
    return "Loading…"


def cannot_show_form(reason: str) -> str:
    """The form could not be built (Slack did not answer a look-up): said instead of leaving "Loading…"."""
    return f":warning: The form cannot be shown: {reason}. Nothing was sent. Close this and try again in a minute."


def slack_too_slow() -> str:
    return "Slack did not answer in time"


def form_went_wrong() -> str:
    return ":warning: Something went wrong while preparing the form. Nothing was sent. Close this and try again."


def cut_notice(original: int, kept: int) -> str:
    """Under the message field, when the forwarded message did not fit in it."""
    return (
        f"The message was {original:,} characters; the first {kept:,} are in the field — {original - kept:,} were cut."
    )


# ------------------------------------------------------------ the App Home tab

HOME_TITLE = "D7 Relay: texts from Slack"
HOME_WHAT_YOU_CAN_SEND = "*What you can send*"
HOME_RECENT = "*Your recent sends*"
HOME_SEND_BUTTON = "Send a text"
HOME_NOTHING_SENT = "Nothing sent yet. `/sms`, `/whatsapp` or the button above."
HOME_ADMINS = "The relay (admins)"
HOME_RULE_TEXT = 2900  # characters of one rule's section (25 of them fit a view)
HOME_LINE = 400  # characters of one line inside it


def home_problems(problems: Sequence[str]) -> str:
    """What the tab could not show this time."""
    return ":warning: " + "; ".join(problems) + ". Open the tab again in a moment."


def home_more_rules(more: int) -> str:
    return f"… and {more} more rules admit you; `python -m bot explain` decides any send."


def home_nothing_allowed(admins: Sequence[str]) -> str:
    """What a person no rule admits reads, and whom to ask."""
    if not admins:
        return "Nothing is allowed for you here yet: the bot's policy has no rule for you. Ask your Slack admins."
    who = ", ".join(f"<!subteam^{a}>" if USERGROUP_ID.match(a) else f"<@{a}>" for a in admins[:10])
    return f"Nothing is allowed for you here yet: no rule of the bot's policy admits you. Ask {who}."


def recipients_in_words(policy: Policy, rule: Rule, show: NumberDisplay) -> str:
    """``numbers in US, CA``, ``contact group oncall-db (2 numbers)``, ``numbers starting +44``, ``any number``."""
    words = []
    for pattern in rule.recipients:
        if pattern == WILDCARD:
            words.append("any number")
        elif pattern.startswith(REGION_PREFIX):
            words.append(f"numbers in {pattern.removeprefix(REGION_PREFIX).replace(',', ', ')}")
        elif pattern.startswith(GROUP_PREFIX):
            name = pattern.removeprefix(GROUP_PREFIX)
            count = len(policy.contacts.get(name, []))
            words.append(f"contact group {escape(name)} ({count} number{'s' if count != 1 else ''})")
        elif pattern.startswith(SCHEDULE_PREFIX):
            words.append(f"whoever is on call for {escape(pattern.removeprefix(SCHEDULE_PREFIX))}")
        elif pattern.endswith(WILDCARD):
            prefix = pattern[:-1]
            if show is NumberDisplay.MASKED and len(prefix) > 5:  # a long prefix is most of a number
                prefix = prefix[:5] + "…"
            words.append(f"numbers starting {prefix}")
        else:
            words.append(PhoneNumber(pattern).display(show))
    return listing(words, HOME_LINE)


def home_rule(policy: Policy, view: RuleView) -> str:
    """One rule that admits the person: where from, as whom, to whom, its budgets and templates."""
    rule = view.rule
    channels = (
        "any channel"
        if WILDCARD in rule.slack_channels
        else listing([f"<#{c}>" for c in rule.slack_channels], HOME_LINE)
    )
    senders = ", ".join(
        f"{policy.senders[s].via.label} as `{escape(s)}` ({escape(policy.senders[s].originator)})" for s in rule.senders
    )
    most = rule.max_recipients or policy.defaults.max_recipients
    lines = [
        f"*{escape(rule.name)}*",
        f"From {channels} · {fit(senders, HOME_LINE)}",
        f"To {recipients_in_words(policy, rule, policy.defaults.show_numbers)} · at most {most} per send",
    ]
    at = utc_now()
    budgets = [usage_line(charge, usage, at) for charge, usage in view.budgets]
    budgets += [
        f"{charge.name.replace('a channel', 'each channel')}: {describe_budget(charge.budget)}"
        for charge in view.shared
    ]
    if budgets:
        lines.append("Budgets: " + listing(budgets, 2 * HOME_LINE, sep="; "))
    if view.templates:
        lines.append("WhatsApp templates: " + listing([f"`{escape(t)}`" for t in view.templates], HOME_LINE))
    return fit("\n".join(lines), HOME_RULE_TEXT)


def home_recent(recent: RecentSend, show: NumberDisplay) -> str:
    """One of the person's recent sends: where, when, how it ended, each phone's status."""
    record = recent.record
    request = record.request
    stamp = f"{record.created_at:%Y-%m-%d %H:%M} UTC"
    when = f"<!date^{int(record.created_at.timestamp())}^{{date_short_pretty}} {{time}}|{stamp}>"
    where = "a direct message" if request.channel_id.startswith("D") else f"<#{request.channel_id}>"
    head = [where, when, request.via.label, f"*{record.state.value}*"]
    if record.request_id:
        head.append(f"request_id `{escape(record.request_id)}`")
    if recent.link:
        head.append(f"<{recent.link}|thread>")
    statuses = {s.recipient: s for s in recent.statuses}
    numbers = record.recipients or []
    people = []
    for number in numbers:
        shown = PhoneNumber(number).display(show)
        status = statuses.get(number)
        people.append(f"{shown}: {delivery_text(status.status, status.reason)}" if status else shown)
    lines = [" · ".join(head)]
    if people:
        lines.append(listing(people, 1200, sep="\n"))
    if record.refusal is not None:
        lines.append(fit("Not sent: " + "; ".join(shown_markup(p) for p in record.refusal.problems), 600))
    if recent.replies:
        lines.append(home_replies(recent.replies, show))
    return fit("\n".join(lines), 2900)


def home_admin(admin: AdminView, show: NumberDisplay) -> list[str]:
    """The admins' part: the balance, today's sends, what needs a person, the policy, the alert rules."""
    texts = []
    balance = admin.balance
    if balance is None:
        texts.append("*D7 balance:* not known (D7 does not offer it, or it was not read yet)")
    else:
        low = " · :warning: below the warning level" if balance.get("below_warning_level") else ""
        texts.append(
            f"*D7 balance:* {balance['amount']:.2f} {escape(str(balance.get('currency') or ''))} "
            f"(read {escape(str(balance['read_at']))}){low}"
        )
    since = f"{admin.since:%Y-%m-%d} (UTC)"
    if admin.by_channel:
        rows = []
        for channel, outcomes in sorted(admin.by_channel.items(), key=lambda kv: -sum(kv[1].values())):
            counts = ", ".join(f"{n} {state}" for state, n in outcomes.most_common())
            rows.append(f"<#{channel}>: {counts}")
        texts.append(f"*Sends on {since}:*\n" + listing(rows, 2500, sep="\n"))
    else:
        texts.append(f"*Sends on {since}:* none")
    if admin.need_a_person:
        rows = []
        for record, why in admin.need_a_person:
            ref = f"request_id `{escape(record.request_id)}`" if record.request_id else f"send `{record.id[:8]}`"
            rows.append(f"<#{record.request.channel_id}> · {ref} · <@{record.request.user_id}> · {escape(why)}")
        texts.append("*Needs a person:*\n" + listing(rows, 2500, sep="\n"))
    else:
        texts.append("*Needs a person:* nothing today")
    policy = (
        f"*Policy:* `{escape(admin.policy_file)}` loaded {admin.policy_loaded_at:%Y-%m-%d %H:%M} UTC · "
        f"`check`: {len(admin.warnings)} warning{'s' if len(admin.warnings) != 1 else ''}"
    )
    if admin.warnings:
        policy += "\n" + listing([escape(w) for w in admin.warnings], 2000, sep="\n")
    texts.append(policy)
    if admin.alerts:
        rows = []
        for a in admin.alerts:
            last = f"last match {a.last_match:%H:%M} UTC" if a.last_match else "no match today"
            rows.append(
                f"{escape(a.rule)}: {last} · {a.texted} texted · {a.held} held back · {a.repeats} repeats · "
                f"{a.refused} not texted"
            )
        texts.append("*Alert rules today:*\n" + listing(rows, 2500, sep="\n"))
    texts.append(home_opt_outs(admin.opted_out, show))
    return [fit(t, 2900) for t in texts]


def home_your_shifts(shifts: Sequence[YourShifts]) -> str:
    """ "Your on-call shifts": for each schedule the person is on, their shift now and their next one."""
    lines = [":pager: *Your on-call shifts*"]
    for mine in shifts:
        parts = []
        if mine.now is not None:
            taken = " (override)" if mine.now.override is not None else ""
            parts.append(f"on call *now*, until {_date(mine.now.ends)}{taken}")
        if mine.next is not None:
            parts.append(f"next from {_date(mine.next.starts)} until {_date(mine.next.ends)}")
        lines.append(f"• *{escape(mine.schedule)}*: " + ("; ".join(parts) or "no shift among the next ones"))
    return fit("\n".join(lines), HOME_RULE_TEXT)


COVERAGE_SECTIONS = 5  # sections of "On call, the coming week" (a view holds 100 blocks)
GAPS_SHOWN = 3  # gaps listed per schedule (a line stays under 1,000 characters)
UNVERIFIED_SHOWN = 10  # people without a verified phone listed per schedule


def home_coverage(coverage: Sequence[Coverage]) -> list[str]:
    """Admins: each schedule's coming week — who is on call now, and its gaps flagged (nobody, no usable or no
    verified phone) — schedules with gaps first, in sections within Slack's limits."""
    lines = []
    for c in sorted(coverage, key=lambda c: not (c.gaps or c.unread or c.unverified)):
        now = c.shifts[0]
        who = f"{_on_call_person(now.user_id) if now.user_id else 'nobody'} now, next handoff {_date(now.ends)}"
        if c.unread is not None:
            status = f":warning: the members of user group {escape(c.unread)} could not be read"
        elif c.gaps:
            listed = "; ".join(
                f"from {_date(g.shift.starts)} {_on_call_person(g.shift.user_id) if g.shift.user_id else 'nobody'}: "
                f"{escape(g.why)}"
                for g in c.gaps[:GAPS_SHOWN]
            )
            more = f" and {len(c.gaps) - GAPS_SHOWN} more" if len(c.gaps) > GAPS_SHOWN else ""
            status = f":warning: {len(c.gaps)} gap{'s' if len(c.gaps) != 1 else ''} this week: {listed}{more}"
        else:
            status = ":white_check_mark: covered all week"
        line = f"• *{escape(c.schedule)}*: {who} — {status}"
        if c.unverified:
            names = ", ".join(f"<@{u}>" for u in c.unverified[:UNVERIFIED_SHOWN])
            more = f" and {len(c.unverified) - UNVERIFIED_SHOWN} more" if len(c.unverified) > UNVERIFIED_SHOWN else ""
            line += f"\n    no verified phone: {names}{more}"
        lines.append(line)
    sections: list[str] = []
    chunk = "*On call, the coming week:*"
    for i, line in enumerate(lines):
        if len(chunk) + len(line) + 1 > HOME_RULE_TEXT:
            if len(sections) + 1 == COVERAGE_SECTIONS:
                chunk += f"\n…and {len(lines) - i} more schedules: `/sms oncall <schedule>` shows one"
                break
            sections.append(chunk)
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    sections.append(chunk)
    return sections


# ------------------------------------------------------------ the admin channel


def money(amount: float, currency: str | None) -> str:
    return f"{amount:,.2f} {currency}" if currency else f"{amount:,.2f}"


def low_balance_warning(balance: Balance, low: float) -> str:
    """The admin channel's message when the balance drops below ``low``."""
    return (
        f":warning: The D7 account's balance is {money(balance.amount, balance.currency)}, below the warning level "
        f"of {money(low, balance.currency)} (`defaults.low_balance` in the policy). When it runs out, D7 refuses "
        "every text: top up the D7 account. This is said once; again only if the balance goes back above "
        f"{money(low, balance.currency)} and drops below it again."
    )


def acknowledged(user_id: str) -> str:
    """The reply in an alert's thread when a person acknowledged it."""
    return f":white_check_mark: *Acknowledged* by <@{user_id}>: no more texts for this alert until it is resolved."


def acknowledged_by_phone(phone: str, name: str | None) -> str:
    """The reply in an alert's thread when a phone it was texted to acknowledged it."""
    whose = f" ({escape(name)}'s phone)" if name else ""
    return (
        f":white_check_mark: *Acknowledged* from {escape(phone)}{whose}: no more texts for this alert until it is "
        "resolved."
    )


def resolved_by_phone(phone: str, name: str | None) -> str:
    """The reply in an alert's thread when a phone it was texted to resolved it by its text's link."""
    whose = f" ({escape(name)}'s phone)" if name else ""
    return f":white_check_mark: *Resolved* from {escape(phone)}{whose}, by the link in its text."


def acknowledger(first: SendRecord | None, show: NumberDisplay) -> str:
    """Who acknowledged an alert, as a thread shows it: a mention, or the phone (and whose it is)."""
    who = first.acked_by if first is not None else None
    if who is None:
        return "someone"
    if who.startswith("+"):
        name = first.checked.names.get(who) if first is not None and first.checked else None
        return escape(PhoneNumber(who).display(show)) + (f" ({escape(name)}'s phone)" if name else "")
    return f"<@{who}>"


def resolves_alert(send: PreparedSend, channel_id: str, alert_ts: str) -> str:
    """The reply in a resolving post's thread when the alert it ends was posted on its own: where the story is."""
    try:
        when = _date(datetime.fromtimestamp(float(alert_ts), UTC))
    except (ValueError, OverflowError):
        when = "earlier"
    phones = recipients_text(send, send.recipients)
    return (
        f":white_check_mark: *Resolves an alert* posted {when} in <#{channel_id}>: RESOLVED goes to the phones "
        f"it reached ({phones}). The outcome is told in that alert's thread."
    )


# ------------------------------------------------------------ the workflow step's inputs (plain text: Workflow Builder)


def step_bad_via(raw: str) -> str:
    return f"'Send by' must be sms or whatsapp, not '{raw}'"


def step_no_channel() -> str:
    return "choose the channel where the result is posted ('Post the result in')"


def step_not_people(value: str) -> str:
    return f"'People' must hold Slack users, not '{value[:40]}'"


def step_nobody() -> str:
    return "name who to text: phone numbers, people or contact groups"


def step_empty() -> str:
    return "the message is empty"


def step_runner_typed() -> str:
    return (
        "'Who runs it' is a user ID the workflow's author chose, so the step cannot tell who ran it: update the "
        "app from manifest.yml (the input is now Slack's user context) and set it to 'Person who used this workflow'"
    )


def step_no_runner() -> str:
    return "the step needs 'Who runs it' set to 'Person who used this workflow' (Slack's user context)"


# ------------------------------------------------------------ Slack's directory


def not_in_workspace(user_id: str) -> str:
    return f"<@{user_id}> is not a member of this workspace"


def not_a_user_group(group_id: str) -> str:
    return f"<!subteam^{group_id}> is not a user group of this workspace"


# ------------------------------------------------------------ texts phones send back (``bot.sending.inbound``)

REPLY_BUTTON = "inbound_reply"  # under a phone's reply: opens the compose form for that number in that thread


def phone_replied(phone: str, text: str, inbound_id: str) -> tuple[str, list[Block]]:
    """A phone's reply, where the send that texted it is told (or in ``inbound.channel``): ``+1 415 ••• 0100
    replied: …``, made inert (escaped where Slack reads markup, a literal quote in the blocks), with **Reply…**."""
    said = text if text.strip() else "(an empty text)"
    return fit(f"{escape(phone)} replied: {escape(said)}", TEXT_LIMIT), [
        section(f":speech_balloon: *{escape(phone)} replied:*"),
        quote(said),
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": REPLY_BUTTON,
                    "text": {"type": "plain_text", "text": "Reply…"},
                    "value": inbound_id,
                }
            ],
        },
    ]


def phone_keyword(phone: str, word: str, why: Unanswered) -> str:
    """A keyword the bot did not answer with a text, and why (what it did answer tells its own story)."""
    who, said = escape(phone), f"*{escape(word)}*"
    if why is Unanswered.ALREADY_OUT:
        return f":no_bell: {who} texted {said} again: it had opted out already (and had its one confirmation)."
    if why is Unanswered.NOT_OUT:
        return f":bell: {who} texted {said}: it was not opted out, so nothing changed."
    if why is Unanswered.OPTED_OUT:
        return f":no_bell: {who} texted {said}: it has opted out of texts, so it was not answered."
    return (
        f":warning: {who} texted {said}: done, but not confirmed by text: the policy has no SMS sender to answer with."
    )


def phone_answer_head(send: PreparedSend, asked: str, word: str) -> str:
    """The parent line of the bot's answer to a phone (``asked``: stop, start or help)."""
    who = recipients_text(send)
    by = f"as *{escape(send.originator)}* (`{escape(send.sender)}`)"
    said = f"*{escape(word)}*"
    if asked == "stop":
        return f":no_bell: {who} texted {said}: it has opted out of texts. The bot confirms, {by}:"
    if asked == "start":
        return f":bell: {who} texted {said}: it has opted back in. The bot confirms, {by}:"
    return f":information_source: {who} texted {said}. The bot answers with `inbound.help_text`, {by}:"


def inbound_unreadable(why: str, keys: Sequence[str]) -> str:
    """To the admin channel, once per shape of body: a callback the bot could not read, and its keys."""
    shown = listing([f"`{escape(k)}`" for k in keys], 1500) if keys else "none"
    return (
        f":warning: *A text sent back to the bot could not be read* ({escape(why)}). It was kept, not answered. "
        f"The keys D7 posted (never their values): {shown}.\nSet `inbound.fields` in the policy to the keys that "
        "hold the phone number and the text (a dotted path for a nested one, like `data.msisdn`), then reload the "
        "bot. This is said once for bodies of this shape."
    )


def home_replies(replies: Sequence[tuple[str, str]], show: NumberDisplay) -> str:
    """A send's replies on App Home, newest first: (E.164, text)."""
    lines = [f"{escape(PhoneNumber(p).display(show))} replied: {escape(fit(t, 300))}" for p, t in replies]
    return listing(lines, 1200, sep="\n", rest="\n… and {n} more replies")


def home_opt_outs(entries: Sequence[OptOut], show: NumberDisplay) -> str:
    """The admins' list of opted-out phones: when, and how (a STOP text, or which admin)."""
    if not entries:
        return "*Opted out:* no phone"
    rows = []
    for entry in entries:
        when = f"<!date^{int(entry.at.timestamp())}^{{date_short_pretty}} {{time}}|{entry.at:%Y-%m-%d %H:%M} UTC>"
        how = f"texted {escape(entry.by or 'STOP')}" if entry.way is OptOutWay.TEXT else f"by <@{entry.by}>"
        rows.append(f"{escape(PhoneNumber(entry.phone).display(show))} · {when} · {how}")
    return "*Opted out* (`/sms optin <number>` takes one off):\n" + listing(rows, 2500, sep="\n")


def opt_out_done(shown: str, out: bool, changed: bool) -> str:
    """An admin's ``/sms optout`` or ``/sms optin``, answered privately."""
    if out:
        if changed:
            return (
                f":no_bell: {escape(shown)} is opted out: it gets no texts until it texts START or an admin runs "
                "`/sms optin`."
            )
        return f"{escape(shown)} was opted out already; nothing changed."
    if changed:
        return f":bell: {escape(shown)} is opted back in: it can be texted again."
    return f"{escape(shown)} was not opted out; nothing changed."


def opt_out_not_admin(command: str) -> str:
    return f":no_entry: Only the policy's admins may use `{escape(command)}`; nothing changed."


def opt_out_unavailable(error: Exception) -> str:
    why = str(error) if isinstance(error, ServiceUnavailable) else "the bot's database did not answer"
    return f":x: Nothing changed: {escape(why)}. Try again in a minute."


def opt_out_usage(command: str) -> str:
    return f"Give one phone number: `{escape(command)} +14155550100`"


# ---------------------------------------------------------------- /sms oncall

ONCALL_LINES_BUDGET = 10_000  # characters of lines in one answer: under Slack's 12,000 for all blocks' text


def _on_call_person(user_id: str | None) -> str:
    return f"<@{user_id}>" if user_id else "nobody (its user group has no members)"


def oncall_board(duties: Sequence[Duty]) -> tuple[str, list[Block]]:
    """``/sms oncall``: each schedule with who is on call now and the next handoff, in sections under Slack's limits
    (50 schedules take a few sections; beyond what fits, "and N more")."""
    if not duties:
        text = "The policy has no schedules (`schedules:` in policy.yml)."
        return text, [section(text)]
    lines = []
    for duty in duties:
        shift = duty.shift
        taken = " (override)" if shift.override is not None else ""
        who = _on_call_person(shift.user_id)
        if duty.unread is not None and shift.user_id is None:
            who = f"unknown (Slack did not give the members of user group {escape(duty.unread)}; try again)"
        lines.append(f"• *{escape(duty.schedule)}*: {who}{taken}, next handoff {_date(shift.ends)}")
    head = ":pager: *On call now*"
    blocks, chunk, used = [section(head)], "", 0
    for i, line in enumerate(lines):
        if used + len(line) > ONCALL_LINES_BUDGET:
            chunk += f"\n…and {len(lines) - i} more: `/sms oncall <schedule>` shows one"
            break
        if len(chunk) + len(line) + 1 > QUOTE_LIMIT:
            blocks.append(section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
        used += len(line)
    blocks.append(section(chunk))
    return fit(head + "\n" + "\n".join(lines), TEXT_LIMIT), blocks


def oncall_shifts(schedule: str, shifts: Sequence[Shift]) -> tuple[str, list[Block]]:
    """``/sms oncall <schedule>``: its shift now and the next ones."""
    lines = [
        f"• {_on_call_person(s.user_id)} until {_date(s.ends)}{' (override)' if s.override is not None else ''}"
        for s in shifts
    ]
    text = f":pager: *On call for {escape(schedule)}*, now and next:\n" + "\n".join(lines)
    return fit(text, TEXT_LIMIT), [section(fit(text))]


def oncall_unknown(schedule: str, known: Sequence[str]) -> str:
    names = listing([f"`{escape(n)}`" for n in known]) if known else "none"
    return f"There is no schedule `{escape(schedule)}` in the policy (its schedules: {names}); nothing changed."


def oncall_not_allowed(schedule: str) -> str:
    return (
        f":no_entry: Only the people on the rotation of *{escape(schedule)}* and the policy's admins may take or "
        "give its on-call; nothing changed."
    )


def oncall_changed(override: Override) -> str:
    """The change, as the channel (and the person who made it) reads it."""
    how = "took" if override.by == override.user_id else f"was given by <@{override.by}>"
    return (
        f":pager: <@{override.user_id}> {how} the on-call for *{escape(override.schedule)}*: on call from now "
        f"until {_date(override.ends)}."
    )


def handoff_notice(schedule: str, shift: Shift) -> str:
    """The DM the incoming person gets at a handoff."""
    given = ""
    if shift.override is not None and shift.override.by != shift.user_id:
        given = f" (given to you by <@{shift.override.by}>)"
    return (
        f":pager: You are on call for *{escape(schedule)}* from now until {_date(shift.ends)}{given}. Alerts sent to "
        f"`schedule:{escape(schedule)}` text the phone in your Slack profile. `/sms oncall {escape(schedule)}` shows "
        "the next shifts; `/sms oncall give` hands it on."
    )


def oncall_unavailable(error: Exception) -> str:
    why = str(error) if isinstance(error, ServiceUnavailable) else "the bot's database did not answer"
    return f":x: Could not read or change the on-call: {escape(why)}. Try again in a minute."


def oncall_not_offered() -> str:
    return "On call is not available here."
