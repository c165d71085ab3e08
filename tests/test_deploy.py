"""deploy/: the Grafana dashboard and the Prometheus alert rules only use metrics the bot
exports, and the rules file has the shape Prometheus loads.

No maintained PromQL parser is on PyPI, so metric names are read out of each expression
after removing what cannot be one: strings, label matchers, ranges, grouping clauses,
function calls, keywords and numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from bot.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
RULES = DEPLOY / "prometheus-rules.yml"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
    | {"group_left", "group_right", "le"}
)


def exported_series() -> set[str]:
    """Every series name the bot's registry can expose, with the type's suffixes."""
    families: list[Metric] = list(Metrics().registry.collect())
    return {family.name + suffix for family in families for suffix in _SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    text = re.sub(r"\b[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?[a-z]*", " ", text)  # numbers, durations
    text = re.sub(r"\b[a-zA-Z_][a-zA-Z0-9_]*\s*\(", "(", text)  # function names
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text))
    return {n for n in names if n.lower() not in _KEYWORDS}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    return exprs


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_name_extraction_itself() -> None:
    expr = (
        'sum by (instance, job) (rate(imagine_jobs_total{outcome="failed",x=~"a{b}"}[5m])) '
        "/ on (job) group_left histogram_quantile(0.95, imagine_x_bucket offset 1h) > bool 1e3"
    )
    assert metric_names(expr) == {"imagine_jobs_total", "imagine_x_bucket"}
    assert metric_names('max(imagine_a) < 1 unless imagine_b{le="+Inf"}') == {
        "imagine_a",
        "imagine_b",
    }


def test_exported_series_include_the_suffixes() -> None:
    series = exported_series()
    assert {
        "imagine_jobs_total",
        "imagine_queue_depth",
        "imagine_segmind_request_seconds_bucket",
        "imagine_segmind_request_seconds_count",
        "imagine_segmind_balance_dollars",
    } <= series
    assert "imagine_jobs" not in series  # a counter is only scraped with _total


def test_dashboard_uses_only_exported_metrics_and_shows_what_operators_need() -> None:
    exported = exported_series()
    used: set[str] = set()
    for expr in dashboard_exprs():
        # label_values(metric, label): the second argument is a label name
        names = metric_names(re.sub(r",\s*\w+\)$", ")", expr))
        assert names, expr
        assert names <= exported, (expr, names - exported)
        used |= names
    assert {
        "imagine_jobs_total",
        "imagine_queue_depth",
        "imagine_segmind_request_seconds_bucket",
        "imagine_segmind_errors_total",
        "imagine_credits_spent_total",
        "imagine_credits_refunded_total",
        "imagine_segmind_balance_dollars",
    } <= used


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    [source] = dashboard["__inputs"]
    assert source["type"] == "datasource" and source["pluginId"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_rules_file_has_the_prometheus_rule_file_shape() -> None:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", rule["for"])
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert {"summary", "description"} <= set(rule["annotations"])
            assert rule["expr"].count("(") == rule["expr"].count(")")


def test_rules_cover_the_four_alerts_with_exported_metrics() -> None:
    exported = exported_series()
    by_name = {rule["alert"]: rule for rule in rules()}
    assert set(by_name) == {
        "ImagineQueueStuck",
        "ImagineSegmindErrorRate",
        "ImagineRefundsSpiking",
        "ImagineSegmindBalanceLow",
    }
    for rule in by_name.values():
        names = metric_names(rule["expr"])
        assert names and names <= exported, (rule["alert"], names - exported)
    assert "imagine_segmind_balance_dollars" in by_name["ImagineSegmindBalanceLow"]["expr"]


@pytest.mark.parametrize(
    "expr", ["rate(imagine_jobz_total[5m])", "imagine_segmind_balance", "imagine_jobs"]
)
def test_an_unknown_metric_would_be_caught(expr: str) -> None:
    assert not metric_names(expr) <= exported_series()
