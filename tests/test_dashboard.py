"""The operators' dashboard (``docs/grafana/relay.json``) and alert rules (``docs/prometheus/relay-alerts.yml``)
name only series that ``GET /metrics`` exports, and are shaped as Grafana and Prometheus load them.

A renamed or misspelled metric makes a panel empty and an alert silent without any error, in Grafana as in
Prometheus: this is the only place that notices. promtool is not a dependency; when it is on PATH it checks the
PromQL too.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import running_app

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "relay.json"
RULES = ROOT / "docs" / "prometheus" / "relay-alerts.yml"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

# ---------------------------------------------------------------- reading PromQL

# PromQL's own words (Prometheus 3).
_FUNCTIONS = """\
abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp clamp_max
clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg delta deriv
double_exponential_smoothing end exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase irate label_join
label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi
predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort
sort_by_label sort_by_label_desc sort_desc sqrt start stddev_over_time stdvar_over_time sum_over_time tan tanh
time timestamp vector year
"""
_AGGREGATIONS = "avg bottomk count count_values group limit_ratio limitk max min quantile stddev stdvar sum topk"
_KEYWORDS = "and atan2 bool by group_left group_right ignoring inf nan offset on or unless without"
FUNCTIONS, AGGREGATIONS, KEYWORDS = (frozenset(words.split()) for words in (_FUNCTIONS, _AGGREGATIONS, _KEYWORDS))
FROM_PROMETHEUS = frozenset({"up"})  # series Prometheus makes about its targets, not the bot's

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")  # ranges, subqueries, and Grafana's [$__rate_interval]
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# A name not preceded by a digit (5m, 1e3), a "$" (Grafana's $job), a dot or another name character.
_NAME = re.compile(r"(?<![\w:$.])[A-Za-z_:][\w:]*")
_LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads; ``ValueError`` for an unknown function or unbalanced brackets
    (Grafana and Prometheus would refuse the query, or worse, read it otherwise)."""
    text = _STRING.sub('""', expr)
    if "__name__" in text:
        raise ValueError(f"selects by __name__, which this check cannot follow: {expr}")
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(r"\1", text)
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or char in "{}[]":
            raise ValueError(f"unbalanced brackets in: {expr}")
    if depth:
        raise ValueError(f"unbalanced brackets in: {expr}")
    names = set()
    for match in _NAME.finditer(text):
        word = match.group()
        if word.lower() in KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            if word not in FUNCTIONS | AGGREGATIONS:
                raise ValueError(f"{word}() is not a PromQL function: {expr}")
            continue
        if word not in AGGREGATIONS:  # `sum by (le) (…)`: the label list is gone, `sum` is left before `by`
            names.add(word)
    return names


def variable_names(query: str) -> set[str]:
    """The metric names a Grafana query variable reads (``label_values(selector, label)``)."""
    found = _LABEL_VALUES.fullmatch(query.strip())
    if found is None:
        return metric_names(query)  # a plain PromQL query (query_result)
    return metric_names(found["selector"]) if found["selector"] else set()


def test_the_reader_finds_each_metric_and_no_function_label_keyword_or_variable() -> None:
    examples = {
        'sum by (le, kind) (rate(relay_ack_seconds_bucket{job=~"$job", kind="command"}[$__rate_interval]))': {
            "relay_ack_seconds_bucket"
        },
        "relay_d7_balance < relay_d7_balance_warning_level": {"relay_d7_balance", "relay_d7_balance_warning_level"},
        "(time() - relay_d7_balance_read_timestamp_seconds > 2700) and ignoring (currency) relay_d7_balance": {
            "relay_d7_balance_read_timestamp_seconds",
            "relay_d7_balance",
        },
        'up{job="d7-relay"} == 0 or absent(up{job="d7-relay"})': {"up"},
        "predict_linear(relay_d7_balance[6h], 86400) < 0": {"relay_d7_balance"},
        "sum without (via) (rate(a_total[5m] offset 1h)) * 1e3 / on (job) group_left (rule) b": {"a_total", "b"},
        'max_over_time(c[1h:5m]) > bool 2 unless label_replace(d, "to", "$1", "from", "(.*)")': {"c", "d"},
        "topk(5, sum by (method, error) (e))": {"e"},
    }
    assert {expr: metric_names(expr) for expr in examples} == examples
    assert variable_names('label_values(relay_outbox_depth{job=~"$job"}, instance)') == {"relay_outbox_depth"}
    assert variable_names("label_values(job)") == set()


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("histogram_quantil(0.99, x_bucket)", "histogram_quantil() is not a PromQL function"),
        ("rate(x[5m]", "unbalanced brackets"),
        ('sum(x{job="a")', "unbalanced brackets"),
        ("x]", "unbalanced brackets"),
        ('{__name__="x"}', "selects by __name__"),
    ],
)
def test_the_reader_refuses_what_prometheus_would_not_read(expr: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        metric_names(expr)


# ---------------------------------------------------------------- what the files hold


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too; rows themselves are not panels."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries(board: dict[str, Any]) -> Iterator[tuple[str, set[str]]]:
    """(where, metric names) for each panel query and each query variable."""
    for panel in panels(board):
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", metric_names(target["expr"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield f"variable {variable['name']!r}", variable_names(text)


def rule_queries(loaded: dict[str, Any]) -> Iterator[tuple[str, set[str]]]:
    for group in loaded["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", metric_names(rule["expr"])


def unexported(queries: Iterable[tuple[str, set[str]]], exported: frozenset[str]) -> dict[str, set[str]]:
    """Each query's names that are neither exported nor Prometheus' own."""
    missing = {where: names - exported - FROM_PROMETHEUS for where, names in queries}
    return {where: names for where, names in missing.items() if names}


# ---------------------------------------------------------------- what /metrics exports

SERIES = {  # the series of each family type, as Prometheus stores them
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
    "unknown": ("",),
}


async def _scrape(tmp_path: Path) -> str:
    with FakeSlack() as slack, FakeD7() as d7:
        slack.add_channel("C0OPS")
        slack.state.usergroups["S0SUPPORT"] = []
        async with running_app(slack, d7, tmp_path) as app:
            await app.command("/sms", "+14155550100 deploy finished")  # labelled series, as in production
            await app.settle()
            response = await app.http.get(f"{app.url}/metrics")
    assert response.status_code == 200
    return response.text


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, frozenset[str]]:
    """Each metric family the running bot's ``GET /metrics`` exports, with its series names (those of labelled
    series not seen yet included)."""
    text = asyncio.run(_scrape(tmp_path_factory.mktemp("bot")))
    return {
        family.name: frozenset({family.name + suffix for suffix in SERIES[family.type]})
        | {sample.name for sample in family.samples}
        for family in text_string_to_metric_families(text)
    }


@pytest.fixture(scope="module")
def exported(families: dict[str, frozenset[str]]) -> frozenset[str]:
    names = frozenset().union(*families.values())
    if sys.platform != "linux":  # prometheus_client reads process_* from /proc: Linux only (production)
        names |= {n for _, found in dashboard_queries(dashboard()) for n in found if n.startswith("process_")}
    return names


def test_every_dashboard_query_reads_series_the_bot_exports(exported: frozenset[str]) -> None:
    assert unexported(dashboard_queries(dashboard()), exported) == {}


def test_every_alert_rule_reads_series_the_bot_exports(exported: frozenset[str]) -> None:
    assert unexported(rule_queries(rules()), exported) == {}


def test_a_misspelled_metric_in_a_copy_of_the_dashboard_or_the_rules_is_caught(exported: frozenset[str]) -> None:
    board = json.loads(DASHBOARD.read_text().replace("relay_d7_retries_total", "relay_d7_retry_total"))
    loaded = yaml.safe_load(RULES.read_text().replace("relay_db_writes_failing", "relay_db_write_failing"))

    assert set(unexported(dashboard_queries(board), exported)) == {"panel 'D7 retries, by reason' A"}
    assert unexported(rule_queries(loaded), exported) == {"rule RelayDatabaseWritesFailing": {"relay_db_write_failing"}}


def test_every_relay_metric_is_on_the_dashboard(families: dict[str, frozenset[str]]) -> None:
    on_board = frozenset().union(*(names for _, names in dashboard_queries(dashboard())))
    relay = {name: series for name, series in families.items() if name.startswith("relay_")}
    assert [name for name, series in relay.items() if not name.endswith("_created") and not series & on_board] == []


# ---------------------------------------------------------------- shapes Grafana and Prometheus load


def test_the_dashboard_imports_anywhere_each_panel_on_the_chosen_data_source() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    all_panels = list(panels(board))

    assert board["schemaVersion"] >= 39
    assert board["uid"]
    assert board["title"]
    assert board["id"] is None  # Grafana numbers it on import
    assert (variables["DS_PROMETHEUS"]["type"], variables["DS_PROMETHEUS"]["query"]) == ("datasource", "prometheus")
    assert [v["name"] for v in variables.values() if v["type"] == "query" and v["datasource"] != DATASOURCE] == []
    assert [p["title"] for p in all_panels if p.get("datasource") != DATASOURCE] == []
    assert [p["title"] for p in all_panels if not p.get("targets")] == []
    for panel in all_panels:
        targets = panel["targets"]
        assert all(t.get("datasource") == DATASOURCE and t.get("expr") for t in targets), panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what it shows and what is normal"
    ids = [p["id"] for p in board["panels"]] + [p["id"] for p in all_panels if p not in board["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def headings(path: Path) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings."""
    anchors = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_the_rules_load_as_prometheus_rules_each_with_for_a_severity_a_summary_and_a_runbook() -> None:
    loaded = rules()
    assert set(loaded) == {"groups"}
    names = [group["name"] for group in loaded["groups"]]
    assert len(names) == len(set(names))
    alerts = []
    for group in loaded["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}
        for rule in group["rules"]:
            name = rule["alert"]
            alerts.append(name)
            assert set(rule) <= RULE_KEYS, name
            assert re.fullmatch(r"Relay[A-Z][A-Za-z0-9]+", name)
            assert isinstance(rule["expr"], str), name
            assert DURATION.fullmatch(str(rule["for"])), f"{name}: 'for' must be a duration"
            assert rule["labels"]["severity"] in {"critical", "warning"}, name
            assert all(isinstance(v, str) for v in (*rule["labels"].values(), *rule["annotations"].values())), name
            assert rule["annotations"]["summary"], name
            assert rule["annotations"]["description"], name
            page, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert anchor in headings(ROOT / page), f"{name}: no section #{anchor} in {page}"
    assert len(alerts) == len(set(alerts))
    assert {"RelaySendsStuck", "RelayDatabaseWritesFailing", "RelayBalanceLow", "RelayBacklogGrowing"} <= set(alerts)


# ---------------------------------------------------------------- promtool, where it is installed

PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules_and_every_dashboard_query(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    grafana = {"$__rate_interval": "1m", "$__range": "1h", "$job": "relay", "$instance": ".*"}
    exprs = []
    for panel in panels(dashboard()):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in grafana.items():
                expr = expr.replace(variable, value)
            exprs.append({"record": f"panel:{panel['id']}:{target['refId']}", "expr": expr})
    queries = tmp_path / "dashboard-rules.yml"
    queries.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": exprs}]}))

    checked = subprocess.run(  # noqa: S603 - promtool from PATH, our own files
        [PROMTOOL, "check", "rules", str(RULES), str(queries)], capture_output=True, text=True
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
