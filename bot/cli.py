"""Command line: ``python -m bot [serve]``, ``check``, ``explain ...``, ``explain-alert ...``, ``audit [prune] ...``.

Exit status: 0 success (``explain``: allowed; ``explain-alert``: forwarded), 1 denied / not forwarded, 2 bad
configuration or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bot import __version__
from bot.config import Settings, load_policy_settings, load_settings, load_storage_settings
from bot.domain.alerts import describe_window
from bot.domain.budgets import Usage, budgets_of, describe_budget, usage_line
from bot.domain.clock import utc_now
from bot.domain.errors import ConfigError, InvalidPhoneNumber
from bot.domain.models import Via
from bot.domain.phone import PhoneNumber, parse_phone
from bot.domain.policy import (
    DEFAULT_PER_USER,
    GROUP_PREFIX,
    AlertRule,
    Budget,
    Policy,
    PolicySurface,
    SendRequestFacts,
    evaluate,
    load_policy,
    parse_duration,
    policy_warnings,
)

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_CONFIG = 2


def _safe_database_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable)"


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def describe_settings(settings: Settings) -> list[str]:
    """Human summary of the settings, without secrets."""
    mode = "Socket Mode" if settings.socket_mode else f"HTTP on {settings.host}:{settings.port} (POST /slack/events)"
    if settings.dry_run:
        d7 = "DRY RUN: D7_API_TOKEN is not set, nothing will be sent"
    else:
        d7 = f"live, {settings.d7_api_url}"
    reports = f"{settings.public_url}d7/reports/…" if settings.public_url else "off (PUBLIC_URL is not set)"
    return [
        f"mode: {mode}",
        f"Slack API: {settings.slack_api_url}",
        f"D7: {d7}",
        f"database: {_safe_database_url(settings.database_url)}",
        f"D7 answers journal: {settings.journal} (kept there while the database does not take them)",
        f"delivery reports: {reports}",
    ]


def _schedule_lines(policy: Policy) -> list[str]:
    """The on-call schedules, one line each (none when the policy has none)."""
    if not policy.schedules:
        return []
    lines = [f"schedules ({len(policy.schedules)}):"]
    for name, schedule in policy.schedules.items():
        who = f"the members of {schedule.group}" if schedule.group else ", ".join(schedule.people)
        where = f"; changes announced in {schedule.channel}" if schedule.channel else ""
        lines.append(
            f"  {name}: {who} in turn, each for {describe_window(schedule.every)}, from {schedule.start} "
            f"{schedule.tz}{where}"
        )
    return lines


def describe_policy(policy: Policy, file: str) -> list[str]:
    """Human summary of a checked policy."""
    d = policy.defaults
    lines = [
        f"policy: {file} (region {d.region}, at most {d.max_segments} SMS segments, "
        f"user groups of at most {d.max_group_size} members, numbers {d.show_numbers})"
    ]
    if d.admin_channel is not None or d.low_balance is not None:
        balance = f"warn below {d.low_balance:g}" if d.low_balance is not None else "no low-balance warning"
        lines.append(f"admin channel: {d.admin_channel or '(none)'}; D7 balance: {balance}")
    lines.append(f"admins: {', '.join(policy.admins) if policy.admins else '(none)'}")
    lines.append(f"workspace budgets: {_limits(d.limits.user_budget, d.limits.per_channel, d.limits.workspace)}")
    if d.limits.per_user is None:
        lines.append(
            f"  (per user: the default, {describe_budget(DEFAULT_PER_USER)}; set defaults.limits.per_user, or none)"
        )
    countries = ", ".join(d.allowed_countries)
    whence = (
        "defaults.countries" if d.countries is not None else f"the country of region {d.region}; defaults.countries"
    )
    lines.append(f"countries: texts go only to numbers in {countries} ({whence})")
    lines.append(f"senders ({len(policy.senders)}):")
    for name, sender in policy.senders.items():
        templates = f"; templates {', '.join(sender.templates)}" if sender.templates else ""
        lines.append(f"  {name}: {sender.via.label} as {sender.originator}{templates}")
    lines.append(f"contact groups ({len(policy.contacts)}):")
    lines += [f"  {name}: {len(numbers)} number(s)" for name, numbers in policy.contacts.items()]
    lines += _schedule_lines(policy)
    lines.append(f"rules ({len(policy.rules)}):")
    for i, r in enumerate(policy.rules, 1):
        most = r.max_recipients or policy.defaults.max_recipients
        limit = f"; at most {most} recipients" + ("" if r.max_recipients else " (defaults.max_recipients)")
        types = f"; also {', '.join(r.allow_number_types)} numbers" if r.allow_number_types else ""
        budgets = _limits(r.limits.per_user, r.limits.per_channel)
        if r.templates is not None:
            types += f"; templates {', '.join(r.templates) or 'none'}"
        lines.append(
            f"  {i}. {r.name}: channels {', '.join(r.slack_channels)}; users {', '.join(r.users)}; "
            f"from {', '.join(r.surfaces)}; "
            f"senders {', '.join(r.senders)}; recipients {', '.join(r.recipients)}{limit}{types}; budgets {budgets}"
        )
    lines.append(f"alert rules ({len(policy.alerts)}):")
    for i, a in enumerate(policy.alerts, 1):
        who = a.from_ if isinstance(a.from_, str) else ", ".join(a.from_)
        cap = a.max_per_phone
        limit = f"; at most {cap.count} per phone per {describe_window(cap.per)}" if cap else ""
        if a.limits.per_rule is not None:
            limit += f"; budget {describe_budget(a.limits.per_rule)}"
        if a.whatsapp_template is not None:
            limit += f"; WhatsApp template {a.whatsapp_template}"
        if a.resolve is not None:
            limit += f"; resolved by {a.resolve}"
        lines.append(
            f"  {i}. {a.name}: channels {', '.join(a.slack_channels)}; from {who}; match {a.match}; "
            f"sender {a.sender}; to {', '.join(a.to)}; dedupe {describe_window(a.dedupe_window)}{limit}"
        )
    if not policy.rules:
        lines.append("warning: no rules, so nobody may send from Slack")
    lines += [f"warning: {warning}" for warning in policy_warnings(policy)]
    return lines


def _limits(per_user: Budget | None, per_channel: Budget | None, workspace: Budget | None = None) -> str:
    named = [("per user", per_user), ("per channel", per_channel), ("for the workspace", workspace)]
    shown = [f"{describe_budget(budget)} {scope}" for scope, budget in named if budget is not None]
    return ", ".join(shown) if shown else "none"


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings()
    policy_file = str(args.policy or settings.bot_policy)
    policy = load_policy(policy_file)
    print("\n".join(["settings: OK", *describe_settings(settings), *describe_policy(policy, policy_file)]), file=out)
    return EXIT_OK


def _recipients(policy: Policy, raw: Sequence[str]) -> list[PhoneNumber]:
    numbers: list[PhoneNumber] = []
    for item in raw:
        if item.startswith(GROUP_PREFIX):
            group = item.removeprefix(GROUP_PREFIX)
            if group not in policy.contacts:
                raise argparse.ArgumentTypeError(f"unknown contact group '{group}'")
            numbers += policy.contact_numbers(group)
        else:
            numbers.append(parse_phone(item, policy.defaults.region))
    return list(dict.fromkeys(numbers))


def cmd_explain(args: argparse.Namespace, out: TextIO) -> int:
    policy_file = str(args.policy or load_policy_settings().bot_policy)
    policy = load_policy(policy_file)
    try:
        recipients = _recipients(policy, [r for value in args.to for r in _csv(value)])
    except (InvalidPhoneNumber, argparse.ArgumentTypeError) as exc:
        print(f"error: --to: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    facts = SendRequestFacts(
        user_id=args.user,
        channel_id=args.channel,
        via=Via(args.via),
        recipients=recipients,
        sender=args.sender,
        user_groups=frozenset(_csv(args.groups or "")),
        surface=PolicySurface(args.surface),
    )
    decision = evaluate(policy, facts)
    shown = ", ".join(n.display(policy.defaults.show_numbers) for n in recipients)
    print(f"{facts.via.label} from {facts.user_id} in {facts.channel_id} to {shown or 'nobody'}", file=out)
    if decision.allowed:
        print(f"ALLOWED by rule '{decision.rule}', sender '{decision.sender}'", file=out)
        print("\n".join(describe_budgets(policy, decision.rule or "", facts)), file=out)
        return EXIT_OK
    print(f"DENIED: {decision.reason}", file=out)
    if decision.rule:
        print(f"(closest rule: '{decision.rule}', failed on {decision.dimension})", file=out)
    return EXIT_DENIED


def describe_budgets(policy: Policy, rule: str, facts: SendRequestFacts) -> list[str]:
    """The budgets a send allowed by ``rule`` counts against, and what their open windows have used (read from
    ``DATABASE_URL`` when it can be)."""
    budgets = budgets_of(policy, rule, facts.user_id, facts.channel_id, facts.channel_id)
    if not budgets:
        return ["budgets: none (the policy sets no limits for this rule or the workspace)"]
    at = utc_now()
    url = load_storage_settings().database_url
    parsed = make_url(url)
    usage: dict[str, Usage] = {}
    note = ""
    if parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).exists()):
        pass  # no database yet: nothing was ever sent
    else:
        usage, note = asyncio.run(_usage(url, [b.key for b in budgets]))
    unit = "one per recipient" if facts.via is Via.WHATSAPP else "recipients x SMS segments"
    lines = [f"budgets (billed messages: {unit}){note}:"]
    lines += [f"  {usage_line(budget, usage.get(budget.key), at)}" for budget in budgets]
    return lines


async def _usage(url: str, keys: list[str]) -> tuple[dict[str, Usage], str]:
    """What the budgets' open windows have used, and a note when it could not be read. Read only: the schema is
    not migrated (``explain`` may run with read-only credentials, or beside a bot of another version)."""
    from bot.storage.budgets import SqlBudgetLedger
    from bot.storage.database import Database
    from bot.storage.engine import create_engine

    try:
        async with Database(create_engine(url)) as db:
            return await SqlBudgetLedger(db).usage(keys), ""
    except (OSError, SQLAlchemyError) as exc:
        return {}, f"; what is used is unknown: cannot read {_safe_database_url(url)} ({type(exc).__name__})"


def _read_message(file: str, author: str | None = None) -> dict[str, Any]:
    """A message as it is pasted: the event, an Events API body (its ``event``), ``{"message": …}`` (a
    ``chat.postMessage`` answer, a ``message_changed`` event), ``{"messages": [...]}`` (``conversations.history``:
    the first), or what a tool sends to a webhook (``text``, ``attachments``, ``blocks``). ``file`` ``-``: standard
    input. ``author``: who posts it (B… a bot, U… a person), for a message that does not say."""
    if file == "-" and sys.stdin.isatty():
        print("paste the message's JSON, then Ctrl-D (or give --file)", file=sys.stderr)
    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    data = json.loads(text)
    if isinstance(data, dict):
        for key in ("event", "message"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
        else:
            if isinstance(data.get("messages"), list) and data["messages"] and isinstance(data["messages"][0], dict):
                data = data["messages"][0]
    if not isinstance(data, dict) or not any(k in data for k in ("text", "attachments", "blocks")):
        raise ValueError("not a Slack message: expected an object with text, attachments or blocks")
    if author:
        data = {k: v for k, v in data.items() if k not in ("user", "bot_id", "bot_profile")}
        data |= {"bot_id": author} if author.startswith("B") else {"user": author}
    elif not data.get("user") and not data.get("bot_id") and not (data.get("bot_profile") or {}).get("id"):
        data = data | {"bot_id": WEBHOOK_AUTHOR}  # a tool's webhook body: Slack posts it as a bot
    return data


# The author a pasted webhook body is taken to have: Slack posts what a tool sends to a webhook as a bot.
WEBHOOK_AUTHOR = "B0WEBHOOK"


def cmd_explain_alert(args: argparse.Namespace, out: TextIO) -> int:
    from bot.domain.alerts import explain_match, fit, match_resolution, without_state
    from bot.domain.encoding import analyze
    from bot.slack.alerts import NEW_POST_SUBTYPES, facts_of, title_of

    policy_file = str(args.policy or load_policy_settings().bot_policy)
    policy = load_policy(policy_file)
    try:
        message = _read_message(args.file, args.author)
    except (OSError, ValueError) as exc:
        print(f"error: --file: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    facts = facts_of(message, channel_id=args.channel)
    who = ", ".join(sorted(facts.author.ids)) or "unknown author"
    kind = "a bot" if facts.author.is_bot else "a person"
    if facts.author.bot_id == WEBHOOK_AUTHOR:
        kind = "a bot: the message does not say who posts it, --from B… or U… to say"
    print(f"message in {args.channel} from {who} ({kind})", file=out)
    if message.get("subtype") not in NEW_POST_SUBTYPES:
        print(f"NOT FORWARDED: a '{message.get('subtype')}' event is not a new post", file=out)
        return EXIT_DENIED
    try:
        _at(args)
    except ValueError:
        print(f"error: --at: '{args.at}' is not a time like 2026-12-01T23:30", file=sys.stderr)
        return EXIT_CONFIG
    if (resolving := match_resolution(policy, facts, title_of(message, facts.text))) is not None:
        title = without_state(title_of(message, facts.text))
        print(f"RESOLUTION for rule '{resolving.name}': texts \"RESOLVED: {title}\" to the phones that got", file=out)
        print("the alert it is about (a reply in its thread, or the same title without FIRING/RESOLVED)", file=out)
        return EXIT_OK
    lines = explain_match(policy, facts)
    for rule, why in lines:
        print(f"  rule '{rule.name}': {why or 'matches'}", file=out)
    if not lines or lines[-1][1] is not None:
        print("NOT FORWARDED: no alert rule takes this message", file=out)
        print("text the rules matched against:", file=out)
        print("\n".join(f"  | {line}" for line in facts.text.splitlines()), file=out)
        return EXIT_DENIED
    rule = lines[-1][0]
    sender = policy.senders[rule.sender]
    ts = str(message.get("ts") or "0000000000.000000")
    fields = {
        "text": facts.text,
        "title": title_of(message, facts.text),
        "channel": "#" + (args.channel_name or args.channel),
        "link": args.link or f"https://your-workspace.slack.com/archives/{args.channel}/p{ts.replace('.', '')}",
    }
    fitted = fit(rule.template, fields, sender.via, rule.max_segments)
    if sender.via is Via.SMS:
        info = analyze(fitted.text)
        size = f"{info.encoding.label}, {info.segments} of at most {rule.max_segments} part(s), {info.characters} chars"
    else:
        size = f"{len(fitted.text)} characters"
    print(f"FORWARDED by rule '{rule.name}': {sender.via.label} as {sender.originator} ({rule.sender})", file=out)
    print(f"to: {', '.join(rule.to)} (user groups: each member's profile phone, read at send time)", file=out)
    print(f"text ({size}{', body cut to fit' if fitted.cut else ''}):", file=out)
    print("\n".join(f"  | {line}" for line in fitted.text.splitlines()), file=out)
    print("\n".join(f"note: {n}" for n in _alert_notes(args, rule, fields["text"], facts.text)), file=out)
    return EXIT_OK


def _alert_notes(args: argparse.Namespace, rule: AlertRule, shown: str, matched: str) -> list[str]:
    """What ``explain-alert`` shows differently from the bot, and the rule's dedup and limits."""
    from bot.domain.alerts import fingerprint

    notes = []
    if "{channel}" in rule.template and not args.channel_name:
        notes.append("{channel} shows the ID here; the bot reads the name from Slack (try --channel-name)")
    if "{link}" in rule.template and not args.link:
        notes.append("{link} is an example here; the bot asks Slack for the message's permalink")
    if "<@" in shown or "@U" in shown:
        notes.append("mentions show user IDs here; the bot shows people's names")
    limit = (
        f"; at most {rule.max_per_phone.count} texts per phone per {describe_window(rule.max_per_phone.per)}, "
        "the rest in one summary text at the end of the window"
        if rule.max_per_phone
        else ""
    )
    notes.append(f"repeats within {describe_window(rule.dedupe_window)} are not texted again{limit}")
    notes.append(f"fingerprint {fingerprint(rule.name, matched)[:12]}")
    return notes + _lifecycle_notes(args, rule, matched)


def _lifecycle_notes(args: argparse.Namespace, rule: AlertRule, matched: str) -> list[str]:
    """Which of resolve, acknowledgement, escalation and quiet hours apply to this alert at ``--at``."""
    at = _at(args)
    notes = []
    if rule.resolve:
        notes.append(f"a post matching /{rule.resolve}/ about it texts RESOLVED to the phones that got it")
    reactions = ", ".join(f":{r}:" for r in rule.ack_reactions)
    ways = [f"a reaction ({reactions}) by a person of this workspace"] if "reactions" in rule.ack_by else []
    if "replies" in rule.ack_by:
        ways.append("a reply in its thread by a person of this workspace")
    else:
        ways.append("a reply in its thread by one of its own people (in its or its escalation steps' user groups)")
    notes.append(" or ".join(ways) + " acknowledges it")
    for i, step in enumerate(rule.escalate, 1):
        notes.append(
            f"escalation step {i}: not acknowledged after {describe_window(step.after)} "
            f"({(at + step.after):%Y-%m-%d %H:%M} UTC), texted to {', '.join(step.to)}"
        )
    quiet = rule.quiet_hours
    if quiet is not None:
        hours = f"quiet hours {quiet.from_}-{quiet.to} {quiet.tz}"
        window = quiet.window(at)
        if window is None:
            notes.append(f"{hours}: at {at:%Y-%m-%d %H:%M} UTC it is not quiet, texted at once")
        elif quiet.critical(matched):
            notes.append(f"{hours}: at {at:%Y-%m-%d %H:%M} UTC it is quiet, but it matches except: texted at once")
        else:
            notes.append(
                f"{hours}: at {at:%Y-%m-%d %H:%M} UTC it is HELD, in one summary text per phone at "
                f"{window[1]:%Y-%m-%d %H:%M} UTC"
            )
    return notes


def _at(args: argparse.Namespace) -> datetime:
    """``--at`` as an aware time (a time without zone is UTC); now when not given."""
    from bot.domain.clock import utc_now

    if not getattr(args, "at", None):
        return utc_now()
    at = datetime.fromisoformat(str(args.at).replace("Z", "+00:00"))
    return at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def _audit(args: argparse.Namespace, out: TextIO) -> int:
    from bot.audit import render
    from bot.domain.clock import utc_now
    from bot.storage import Storage

    async with await Storage.open(load_storage_settings().database_url) as storage:
        if args.action == "prune":
            deleted = await storage.prune(utc_now() - parse_duration(args.older_than))
            print(f"deleted {deleted} finished send(s) older than {args.older_than}", file=out)
            return EXIT_OK
        since = utc_now() - parse_duration(args.since) if args.since else None
        out.write(render(await storage.sends.audit(since), args.format, full_numbers=args.full_numbers))
        return EXIT_OK


def cmd_audit(args: argparse.Namespace, out: TextIO) -> int:
    if args.action == "prune" and not args.older_than:
        print("error: audit prune needs --older-than (for example 90d)", file=sys.stderr)
        return EXIT_CONFIG
    for name in ("since", "older_than"):
        value = getattr(args, name)
        if value:
            try:
                parse_duration(value)
            except ValueError as exc:
                print(f"error: --{name.replace('_', '-')}: {exc}", file=sys.stderr)
                return EXIT_CONFIG
    try:
        return asyncio.run(_audit(args, out))
    except (OSError, SQLAlchemyError) as exc:
        print(f"error: cannot read the send log ({type(exc).__name__}): {exc}", file=sys.stderr)
        return EXIT_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Slack → SMS / WhatsApp relay on D7")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")

    sub.add_parser("serve", help="run the bot (the default)")

    check = sub.add_parser("check", help="validate settings and the policy file, print a summary")
    check.add_argument("--policy", help="policy file (default: BOT_POLICY or policy.yml)")

    explain = sub.add_parser("explain", help="would this send be allowed, and why")
    explain.add_argument("--user", required=True, help="Slack user ID (U…)")
    explain.add_argument("--channel", required=True, help="Slack channel ID (C…)")
    explain.add_argument("--via", required=True, choices=[v.value for v in Via])
    explain.add_argument("--to", required=True, action="append", help="numbers or group:NAME, comma separated")
    explain.add_argument("--sender", help="sender name from the policy (default: the rule's first)")
    explain.add_argument("--groups", help="user group IDs the user belongs to, comma separated (S…,S…)")
    explain.add_argument(
        "--surface",
        choices=[s.value for s in PolicySurface],
        default=PolicySurface.COMMANDS.value,
        help="how the send starts: commands (default), forms or workflows",
    )
    explain.add_argument("--policy", help="policy file (default: BOT_POLICY or policy.yml)")

    alert = sub.add_parser("explain-alert", help="would this Slack message be forwarded as an alert, and as what text")
    alert.add_argument("--channel", required=True, help="the channel ID it is posted in (C…)")
    alert.add_argument(
        "--file",
        default="-",
        help="the message as JSON: an event, an Events API body, a conversations.history answer or what a tool "
        "sends to a webhook (default -: pasted on standard input)",
    )
    alert.add_argument(
        "--from",
        dest="author",
        help="who posts it: a bot (B…) or a person (U…), for a message that does not say (default: a bot)",
    )
    alert.add_argument("--channel-name", help="the channel's name, for {channel} (default: the ID)")
    alert.add_argument("--link", help="the message's permalink, for {link} (default: an example)")
    alert.add_argument("--policy", help="policy file (default: BOT_POLICY or policy.yml)")
    alert.add_argument("--at", help="the time it is posted, like 2026-12-01T23:30 (UTC unless it says; default now)")

    audit = sub.add_parser("audit", help="export the send log, or prune it (audit prune --older-than 90d)")
    audit.add_argument("action", nargs="?", choices=["export", "prune"], default="export")
    audit.add_argument("--since", default="24h", help="how far back, like 24h or 7d (default 24h)")
    audit.add_argument("--format", choices=["table", "csv", "json"], default="table")
    audit.add_argument("--full-numbers", action="store_true", help="show phone numbers in full (default masked)")
    audit.add_argument("--older-than", help="with prune: delete finished sends older than this, like 90d")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    try:
        if args.command == "check":
            return cmd_check(args, out)
        if args.command == "explain":
            return cmd_explain(args, out)
        if args.command == "explain-alert":
            return cmd_explain_alert(args, out)
        if args.command == "audit":
            return cmd_audit(args, out)
        from bot.serving import serve  # late: the policy tools need none of the serving stack

        return serve(load_settings())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
