"""Every word the core says: why a request is refused (the outbox's refusal and the compose form's field errors
both come from here), the texts it writes itself (ESCALATED, RESOLVED) and how a workflow step is told. Pure
functions, no I/O; Slack's own words are in ``bot.slack.messages``.

What people typed or put in their profile is quoted ``inert`` (``bot.domain.errors``): never a live mention.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from bot.domain import patterns
from bot.domain.errors import inert

# ------------------------------------------------------------ where and who


def conversation_label(channel_id: str) -> str:
    """How a refusal names where a request came from: ``<#C…>`` (Slack shows the channel's name); a direct
    message has no name Slack would show."""
    return "this direct message" if channel_id.startswith("D") else f"<#{channel_id}>"


def user_label(user_id: str) -> str:
    """How a refusal names the person who asked: a mention Slack shows as their name."""
    return f"<@{user_id}>"


def not_a_member(channel_id: str) -> str:
    return f"you are not a member of {conversation_label(channel_id)}: pick a conversation you are in"


def unseen(channel_id: str) -> str:
    return (
        f"the bot cannot see who is in {conversation_label(channel_id)} (it is not in it): invite it there, "
        "or pick a conversation it is in"
    )


def not_decided_by_rules(surface: str) -> str:
    return f"a {surface} send is not decided by the policy's rules"


def database_did_not_answer() -> str:
    return "the bot's database did not answer in time"


def recorder_stopped() -> str:
    return "the bot stopped before it could confirm that your request was recorded"


# ------------------------------------------------------------ recipients


def no_recipients() -> str:
    return "no recipients"


def deactivated(name: str) -> str:
    return f"@{inert(name)} is deactivated"


def a_bot(name: str) -> str:
    return f"@{inert(name)} is a bot and has no phone"


def no_profile_phone(name: str) -> str:
    return f"@{inert(name)} has no phone number in their Slack profile"


def unusable_profile_phone(name: str, why: object) -> str:
    return f"@{inert(name)} has an unusable phone number in their Slack profile: {why}"


def no_such_contact_group(name: str) -> str:
    return f"there is no contact group '{inert(name)}' in the policy"


def no_such_schedule(name: str) -> str:
    return f"there is no schedule '{inert(name)}' in the policy"


def nobody_on_call(name: str) -> str:
    return f"nobody is on call for schedule '{inert(name)}' (its user group has no members)"


def group_too_large(name: str, size: int, limit: int) -> str:
    return f"the user group {name} has {size} members; the policy allows at most {limit} per group"


def group_empty(name: str) -> str:
    return f"the user group {name} has no members"


# ------------------------------------------------------------ the text and WhatsApp templates


def whatsapp_too_long(length: int, limit: int, *, filled_in: bool = False) -> str:
    what = "the filled-in template" if filled_in else "the message"
    return f"{what} has {length} characters; WhatsApp allows at most {limit}"


def templates_are_for_whatsapp() -> str:
    return "templates are for WhatsApp: use /whatsapp"


def unknown_sender(sender: str) -> str:
    return f"unknown sender '{sender}'"


def no_such_template(sender: str, alias: str) -> str:
    """The one wording of "this sender has no such template": a request naming it, a form choosing it, a send whose
    template the policy dropped while it waited."""
    return f"sender '{sender}' has no template '{inert(alias)}'"


def templates_you_may_use(aliases: Collection[str]) -> str:
    return f"templates you may use here: {', '.join(sorted(aliases))}" if aliases else "you may use no templates here"


def template_not_yours(alias: str, where: str, known: str) -> str:
    return f"you may not use the template '{inert(alias)}' from {where} ({known})"


def no_whatsapp_template(alias: str, known: str) -> str:
    return f"there is no WhatsApp template '{inert(alias)}' ({known})"


def template_takes(alias: str, names: Sequence[str], given: int) -> str:
    wanted = f"{len(names)} parameter{'s' if len(names) != 1 else ''}"
    listed = f" ({', '.join(names)})" if names else ""
    return f"the template '{alias}' takes {wanted}{listed}; you gave {given}"


def template_changed(alias: str, takes: int, has: int) -> str:
    return f"the template '{alias}' changed in the policy: it takes {takes} parameters now, this send has {has}"


def opted_out(shown: str, how: str, *, person: str | None = None, group: str | None = None) -> str:
    """A phone on the opt-out list, as a refusal (or an alert's thread, or a group send's note) names it: ``shown``
    as the policy shows numbers, ``how`` it got there (``opt_out_how``); ``person``: whose profile phone it is;
    ``group``: the group the request named it with (then it is left out and the rest is sent; the thread's heading
    says so)."""
    whose = f"{person}'s phone {shown}" if person else shown
    where = f" (in {group})" if group else ""
    until = "it gets none until it texts START, or an admin runs `/sms optin`"
    return f"{whose}{where} has opted out of texts ({how}): {until}"


def opt_out_how(way: str, by: str | None) -> str:
    """How a phone came onto the opt-out list, in a few words: ``it texted STOP``, ``<@U…> opted it out``."""
    if way == "admin":
        return f"<@{by}> opted it out" if by else "an admin opted it out"
    return f"it texted {inert(by)}" if by else "it texted STOP"


# ------------------------------------------------------------ what the bot texts phones that write to it


def stop_confirmation() -> str:
    """The one text a phone gets after it opted out."""
    return "You will get no more texts from us. Reply START to opt back in."


def start_confirmation() -> str:
    """The text a phone gets after it opted back in."""
    return "You will get texts from us again. Reply STOP to opt out."


# ------------------------------------------------------------ what alerts text


def escalated(after: str, body: str) -> str:
    """An escalation's text: the alert's, marked, with how long nobody acknowledged it."""
    return f"ESCALATED, nobody acknowledged in {after}: {body}"


def escalated_title(body: str) -> str:
    return f"ESCALATED: {body.splitlines()[0] if body else ''}"


def resolved(title: str) -> str:
    """What the phones an alert reached are texted when it is resolved."""
    return f"RESOLVED: {title}"


# ------------------------------------------------------------ the App Home tab


def home_groups_unknown() -> str:
    return "Slack did not say which user groups you are in: rules for groups are left out"


def home_recent_unread() -> str:
    return "your recent sends could not be read just now"


def home_admin_unread() -> str:
    return "the admin view could not be read just now"


def not_delivered_to(shown: str, status: str) -> str:
    """Why a send needs a person: a phone it did not reach."""
    return f"not delivered to {shown}: {status}"


def outcome_unknown() -> str:
    return "outcome unknown: D7 may or may not have sent it"


def rejected_by_d7() -> str:
    return "rejected by D7"


def d7_failed_it(kind: str | None) -> str:
    return "D7 failed it" + (f" ({kind})" if kind is not None else "")


# ------------------------------------------------------------ workflow steps


_MENTION = patterns.compile(r"<[@#!](?:subteam\^)?([A-Z0-9]+)(?:\|([^>]*))?>")  # linear time (RE2)


def step_words(text: str) -> str:
    """A step's error as Workflow Builder shows it (plain text): Slack mentions as their labels or IDs."""
    return _MENTION.sub(lambda m: m.group(2) or m.group(1), text)[:1000]


def step_refused(problems: Sequence[str]) -> str:
    return step_words("Not sent: " + "; ".join(problems))


def step_failed(error: object | None) -> str:
    return step_words(f"D7 did not send it: {error or 'it failed'}")


def home_oncall_unread() -> str:
    return "Your on-call shifts could not be read just now (Slack or the database did not answer)."


def gap_nobody() -> str:
    return "nobody is on it"


def gap_no_phone() -> str:
    return "no usable phone in their Slack profile"


def gap_not_verified() -> str:
    return "phone not verified"


def gap_unknown_person() -> str:
    return "Slack does not know them"
