"""The chaos soak's invariant checker: the fakes' logs (every call they received) and the database, after the quiet
period. Each invariant counts its violations and keeps a few examples; ``known`` marks a violation of a bug that
is being fixed elsewhere (reported apart, not failing the run). ``python -m bench._chaos_check DIR`` runs the
checker again over a finished run's files.

What identifies what:
- an intent: its row in ``sends`` (the idempotency key is what the load generator sent: trigger, view, execution,
  alert message); a request of the load is ``Sent`` (``bench/chaos.py``), its token in every text it causes;
- a text on the wire: D7 has no reference for SMS, so (recipients, content) — every request's text is unique;
  a send D7 "carried out" is one it accepted (answered at once or after a hang);
- a post: chat.postMessage that Slack took (``ok``), by (channel, thread, text) and the send and part its metadata
  names (or, without metadata, its blocks).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

SLACK_TIMEOUT = 10.0  # the bot's own timeout for one Slack call: an answer later than this was lost to it
FINAL = {"accepted", "rejected", "failed", "unknown", "denied", "deduplicated", "bundled"}
WENT_OUT = {"accepted", "unknown"}  # D7 may have carried these out
NOTHING_WENT = {"failed", "rejected", "denied", "deduplicated", "bundled"}
KEY_PREFIX = {"command": "trigger:", "whatsapp": "trigger:", "form": "view:", "step": "step:"}
RSS_GROWTH = 0.20  # memory flat: at most this growth from the middle of a process's life to its end
RSS_MIN_LIFE = 180.0  # seconds a process must live for its memory to be judged
ESCALATION_PHONES = {"+14155550120": 1, "+14155550130": 2}


@dataclass
class Invariant:
    name: str
    what: str
    violations: int = 0
    examples: list[str] = field(default_factory=list)
    known: bool = False  # a known open bug: reported apart, does not fail the run
    note: str = ""

    def add(self, example: str) -> None:
        self.violations += 1
        if len(self.examples) < 8:
            self.examples.append(example)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _d7_key(path: str, body: dict[str, Any]) -> list[tuple[str, ...]]:
    """(via, content, recipient) for every recipient of a D7 send body."""
    keys = []
    for m in body.get("messages", []):
        if path.endswith("/messages/v1/send"):
            keys += [("sms", m["content"], r) for r in m["recipients"]]
        else:
            content = m["content"].get("text", {}).get("body") or json.dumps(m["content"].get("template"))
            keys += [("whatsapp", content, r["recipient"]) for r in m["recipients"]]
    return keys


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"chaos\d+[cfsa]\d+", text or ""))


def check(
    db: dict[str, list[dict[str, Any]]],
    slack_log: dict[str, Any],
    d7_log: dict[str, Any],
    sent: Sequence[Any],
    lives: Sequence[dict[str, Any]],
    *,
    middle: float,
    load_ended: float,
) -> list[Invariant]:
    rows = db["sends"]
    for r in rows:
        for column in ("recipients", "held", "alert", "refs"):
            r[column] = _json(r.get(column))
    by_key = {r["idempotency_key"]: r for r in rows}
    carried = [e for e in d7_log["requests"] if e.get("request_id")]
    calls = slack_log["calls"]
    posts = [c for c in calls if c["method"] == "chat.postMessage" and c["ok"]]
    return [
        _one_outcome(rows, by_key, sent, carried),
        _no_sending(rows),
        _no_text_twice(carried),
        *_no_post_twice(posts, rows),
        _told_in_thread(rows, posts, slack_log["responses"], calls),
        _escalations(rows, carried),
        _steps_once(rows, calls),
        _budgets(db["budget_windows"], db["budget_charges"], rows),
        _not_recorded_never_sent(sent, carried),
        _memory(lives, load_ended),
    ]


def _one_outcome(
    rows: list[dict[str, Any]], by_key: dict[str, dict[str, Any]], sent: Sequence[Any], carried: list[dict[str, Any]]
) -> Invariant:
    inv = Invariant(
        "one_outcome",
        "every intent ends in exactly one final state that agrees with D7's log; every acked request has its intent",
    )
    for r in rows:
        if r["state"] not in FINAL and r["state"] != "sending":
            inv.add(f"send {r['id']} ({r['idempotency_key']}) left {r['state']}")
    for s in sent:
        if s.kind in ("reaction",):
            continue
        key = KEY_PREFIX.get(s.kind, "alert:") + s.key
        if s.outcome == "ok" and key not in by_key:
            inv.add(f"{s.kind} {s.token} acked as recorded but no intent {key}")
    # D7's view: what it carried out against what the rows say.
    rids = {e["request_id"]: e for e in carried}
    for r in rows:
        if r["state"] in ("accepted", "rejected") and r["request_id"] not in rids:
            inv.add(f"send {r['id']} {r['state']} with request_id {r['request_id']} that D7 never gave")
    wire: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        text = (r.get("sent_text") or r.get("text") or "").strip()
        for phone in r.get("recipients") or []:
            if phone not in (r.get("held") or []):
                wire[(r["via"], text, phone)].append(r)
    accepted_ids = {r["request_id"] for r in rows if r["request_id"]}
    for e in carried:
        body = json.loads(e["body"])
        for key in _d7_key(e["path"], body):
            owners = wire.get(key, [])
            if e["request_id"] in accepted_ids:
                continue
            if not owners:
                inv.add(f"D7 carried out {key[1][:40]!r} to {key[2]} (request_id {e['request_id']}) for no intent")
            elif not any(o["state"] == "unknown" for o in owners):
                states = ",".join(o["state"] for o in owners)
                inv.add(f"D7 carried out request_id {e['request_id']} ({key[1][:30]!r}) but its intent says {states}")
    return inv


def _no_sending(rows: list[dict[str, Any]]) -> Invariant:
    inv = Invariant("no_row_sending", "no row left 'sending' (nor 'pending' past its deadline) after the quiet period")
    for r in rows:
        if r["state"] == "sending":
            inv.add(f"send {r['id']} ({r['idempotency_key']}) left sending")
    return inv


def _no_text_twice(carried: list[dict[str, Any]]) -> Invariant:
    inv = Invariant("no_text_twice", "D7 carried out no (text, phone) twice")
    seen: Counter[tuple[str, ...]] = Counter()
    first: dict[tuple[str, ...], str] = {}
    for e in carried:
        for key in _d7_key(e["path"], json.loads(e["body"])):
            seen[key] += 1
            if seen[key] == 2:
                inv.add(f"{key[1][:50]!r} to {key[2]}: request_ids {first[key]} and {e['request_id']}")
            first.setdefault(key, e["request_id"])
    return inv


def _kind_of_post(call: dict[str, Any]) -> str:
    if key := call.get("post"):  # "<send>:announcement", "<send>:result", a note's key
        part = str(key).split(":")[1] if ":" in str(key) else ""
        return part if part in ("announcement", "result") else "other"
    text = call["params"].get("text") or ""
    if not call["params"].get("thread_ts"):
        return "announcement"
    if "request_id" in text or "Outcome unknown" in text or "Not sent" in text or "not texted" in text.lower():
        return "result"
    return "other"


def _unknown_in_thread(rows: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """How many ``unknown`` sends each thread tells: an alert and its escalation steps may all read "Still unknown"
    in the same words (their notes carry no metadata), which is not one note posted twice."""
    return Counter(
        (r["channel_id"], r.get("thread_ts") or r.get("origin_thread_ts") or "")
        for r in rows
        if r["state"] == "unknown"
    )


def _no_post_twice(posts: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[Invariant]:
    """Two posts Slack took with the same channel, thread and text (and the same key, where the bot names the post
    in its metadata: announcements, results and notes). Also after Slack's answer to the first was lost (slow
    answers): the bot looks for a post whose answer it did not get before posting it again."""
    inv = Invariant("no_post_twice", "no announcement or result posted twice (Slack took both)")
    other = Invariant("no_other_post_twice", "no other thread reply posted twice (notes: not delivered, acknowledged…)")
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in posts:
        p = c["params"]
        if c.get("post"):  # the bot names the send and the part in the post's metadata: that is its identity
            groups[(p.get("channel", ""), p.get("thread_ts") or "", p.get("text") or "", c["post"])].append(c)
            continue
        groups[(p.get("channel", ""), p.get("thread_ts") or "", p.get("text") or "", c.get("blocks", ""))].append(c)
    unknown = _unknown_in_thread(rows)
    for (channel, thread, text, _blocks), copies in groups.items():
        if len(copies) < 2:
            continue
        keyed = bool(copies[0].get("post"))
        if (
            not keyed
            and text.startswith(":grey_question: *Still unknown:*")
            and len(copies) <= unknown[(channel, thread)]
        ):
            continue
        kind = _kind_of_post(copies[0])
        if not keyed and kind == "other" and channel.startswith("C0ALERTS"):
            continue  # an alert's thread holds its escalation steps' stories too: unkeyed notes read the same
        lost = any(
            c["abandoned"] or (c["answered_at"] or 0) - (c["arrived_at"] or 0) >= SLACK_TIMEOUT for c in copies[:-1]
        )
        after = " (after a lost answer)" if lost else ""
        example = f"{kind} x{len(copies)} in {channel} thread {thread or '-'}{after}: {text[:70]!r}"
        (inv if kind != "other" else other).add(example)
    return [inv, other]


def _told_in_thread(
    rows: list[dict[str, Any]],
    posts: list[dict[str, Any]],
    responses: list[dict[str, Any]],
    calls: list[dict[str, Any]],
) -> Invariant:
    inv = Invariant(
        "told_in_thread",
        "every final outcome told: its result post (ts kept as result_ts) in its thread, or privately when it must be",
    )
    by_ts = {(c["params"].get("channel"), c["ts"]): c for c in posts}
    threads: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in posts:
        threads[(c["params"].get("channel", ""), c["params"].get("thread_ts") or "")].append(c)
    private = {r["name"] for r in responses}
    private_calls = {
        (c["params"].get("channel"), c["params"].get("user"))
        for c in calls
        if c["ok"] and c["method"] in ("chat.postEphemeral", "chat.postMessage")
    }
    for r in rows:
        if r["state"] not in FINAL:
            continue
        name = f"send {r['id']} ({r['surface']} {r['state']})"
        if r["posted_at"] is None:
            inv.add(f"{name} never told")
            continue
        thread = r.get("thread_ts") or r.get("origin_thread_ts")
        if r["result_ts"] is not None:
            post = by_ts.get((r["channel_id"], r["result_ts"]))
            if post is None:
                inv.add(f"{name}: result_ts {r['result_ts']} is no post Slack took in {r['channel_id']}")
            elif (post["params"].get("thread_ts") or None) != thread:
                inv.add(f"{name}: result posted in thread {post['params'].get('thread_ts')}, not {thread}")
            elif (
                r["request_id"]
                and r["state"] in ("accepted", "rejected")
                and r["request_id"] not in (post["params"].get("text") or "")
            ):
                inv.add(f"{name}: the result post does not name request_id {r['request_id']}")
            continue
        tokens = _tokens(r.get("text") or "")
        if r["surface"] in ("alert", "escalation", "summary"):
            if not threads.get((r["channel_id"], thread or "")):
                inv.add(f"{name}: nothing posted in its thread {thread}")
            continue
        told_privately = any(t in private for t in tokens) or (r["channel_id"], r["user_id"]) in private_calls
        told_privately = told_privately or (r["user_id"], None) in private_calls
        if not told_privately and r["state"] != "denied":
            inv.add(f"{name}: no result_ts and not told privately (thread {thread})")
        elif not told_privately:
            inv.add(f"{name}: its refusal was told nowhere")
    return inv


def _escalations(rows: list[dict[str, Any]], carried: list[dict[str, Any]]) -> Invariant:
    """Intents and texts; a step's "texted" post twice is ``no_post_twice``'s."""
    inv = Invariant("escalation_once_per_step", "every alert escalated at most once per step (intents and texts)")
    steps = Counter(r["idempotency_key"] for r in rows if r["surface"] == "escalation")
    for key, n in steps.items():
        if n > 1:
            inv.add(f"{key}: {n} intents")
    texted: Counter[tuple[str, str]] = Counter()
    for e in carried:
        for _via, content, phone in _d7_key(e["path"], json.loads(e["body"])):
            if phone in ESCALATION_PHONES:
                for token in _tokens(content):
                    texted[(token, phone)] += 1
    for (token, phone), n in texted.items():
        if n > 1:
            inv.add(f"alert {token}: step {ESCALATION_PHONES[phone]} texted {n} times")
    return inv


def _steps_once(rows: list[dict[str, Any]], calls: list[dict[str, Any]]) -> Invariant:
    inv = Invariant("step_completed_once", "every workflow step with a final intent completed exactly once")
    done = Counter(
        c["params"].get("function_execution_id")
        for c in calls
        if c["method"] in ("functions.completeSuccess", "functions.completeError") and c["ok"]
    )
    for r in rows:
        if r["surface"] == "workflow" and r["state"] in FINAL:
            n = done.get(r.get("step"), 0)
            if n != 1:
                inv.add(f"step {r.get('step')} (send {r['id']}, {r['state']}) completed {n} times")
    return inv


def _budgets(windows: list[dict[str, Any]], charges: list[dict[str, Any]], rows: list[dict[str, Any]]) -> Invariant:
    inv = Invariant(
        "budgets_exact",
        "each budget window counts exactly its charges; sends that certainly sent nothing hold no charge; every "
        "send that went out is charged",
    )
    counted: Counter[tuple[str, str]] = Counter()
    charged: dict[str, int] = defaultdict(int)
    for c in charges:
        counted[(c["key"], str(c["window_start"]))] += int(c["messages"])
        charged[c["send_id"]] += 1
    for w in windows:
        n = counted.get((w["key"], str(w["window_start"])), 0)
        if int(w["used"]) != n:
            inv.add(f"budget {w['key']} window {w['window_start']}: used {w['used']}, charges {n}")
    state = {r["id"]: r for r in rows}
    for send_id in charged:
        r = state.get(send_id)
        if r is not None and r["state"] in NOTHING_WENT:
            inv.add(f"send {send_id} ({r['surface']} {r['state']}) still charged")
    for r in rows:
        if r["state"] in WENT_OUT and not r.get("dry_run") and r["id"] not in charged:
            inv.add(f"send {r['id']} ({r['surface']} {r['state']}) went out uncharged")
    return inv


def _not_recorded_never_sent(sent: Sequence[Any], carried: list[dict[str, Any]]) -> Invariant:
    inv = Invariant("not_recorded_never_sent", "a request its sender was told was not recorded is never texted")
    texted = Counter(
        t for e in carried for _v, content, _p in _d7_key(e["path"], json.loads(e["body"])) for t in _tokens(content)
    )
    for s in sent:
        if s.outcome == "not_recorded" and texted.get(s.token):
            inv.add(f"{s.kind} {s.token} told 'not recorded' but texted")
    return inv


def _memory(lives: Sequence[dict[str, Any]], load_ended: float) -> Invariant:
    inv = Invariant(
        "memory_flat",
        f"each replica process that lived {RSS_MIN_LIFE:.0f} s or more grew under {RSS_GROWTH:.0%} from the middle "
        "of its life to its end",
    )
    judged = 0
    for life in lives:
        samples = [s for s in life["rss"] if s[0] <= load_ended + 1]
        if len(samples) < 4 or samples[-1][0] - samples[0][0] < RSS_MIN_LIFE:
            continue
        judged += 1
        mid_t = (samples[0][0] + samples[-1][0]) / 2
        mid = min(samples, key=lambda s: abs(s[0] - mid_t))[1]
        end = samples[-1][1]
        if end > mid * (1 + RSS_GROWTH):
            inv.add(f"replica {life['replica']} pid {life['pid']}: {mid:.1f} MiB at mid-life, {end:.1f} at the end")
    inv.note = f"{judged} process(es) judged"
    return inv


def report(results: Iterable[Invariant]) -> str:
    lines = ["invariant                        violations"]
    for r in results:
        mark = " (known)" if r.known else ""
        lines.append(f"{r.name:<32} {r.violations:>10}{mark}   {r.what}{'; ' + r.note if r.note else ''}")
        lines += [f"    e.g. {e}" for e in r.examples]
    return "\n".join(lines)


def main() -> int:
    """``python -m bench._chaos_check DIR``: the checker again over a finished run's files (to study a failure)."""
    out = Path(sys.argv[1])
    times = json.loads((out / "times.json").read_text())
    sent = [SimpleNamespace(**json.loads(line)) for line in (out / "requests.jsonl").read_text().splitlines()]
    results = check(
        json.loads((out / "database.json").read_text()),
        json.loads((out / "slack_log.json").read_text()),
        json.loads((out / "d7_log.json").read_text()),
        sent,
        json.loads((out / "replicas.json").read_text()),
        middle=times["middle"],
        load_ended=times["load_ended"],
    )
    print(report(results))
    return 1 if any(r.violations and not r.known for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
