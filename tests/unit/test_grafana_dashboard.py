"""deploy/grafana/kezek-dashboard.json shows what services/common/metrics.py exports: every series
a panel queries exists there with the labels the query uses, and every metric defined there is
on some panel. A renamed metric or label would otherwise leave a panel silently empty.
"""

import json
import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from services.common import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "kezek-dashboard.json"
DATASOURCE = "${DS_PROMETHEUS}"
# labels Prometheus adds to every scraped series
TARGET_LABELS = {"job", "instance"}
SERIES_SUFFIXES = {
    "counter": ["_total", "_created"],
    "gauge": [""],
    "histogram": ["_bucket", "_sum", "_count", "_created"],
    "summary": ["", "_sum", "_count", "_created"],
}


# -- what metrics.py defines -----------------------------------------------------------------------
def defined_metrics() -> dict[str, MetricWrapperBase]:
    """Base metric name (as prometheus_client reports it) -> the metric object."""
    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            (described,) = value.describe()
            found[described.name] = value
    return found


def series_of(metric: MetricWrapperBase) -> dict[str, set[str]]:
    """The series names a metric exports (Counters add `_total`, Histograms `_bucket` ...) with
    the labels each carries."""
    (described,) = metric.describe()
    labels = set(metric._labelnames)
    return {described.name + suffix: labels | ({"le"} if suffix == "_bucket" else set())
            for suffix in SERIES_SUFFIXES[described.type]}


def exported_series() -> dict[str, set[str]]:
    series = {}
    for metric in defined_metrics().values():
        series.update(series_of(metric))
    return series


# -- what the dashboard queries --------------------------------------------------------------------
@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # inside collapsed rows
    return panels


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            found.append((f"variable {variable['name']!r}",
                          query["query"] if isinstance(query, dict) else query))
    return found


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bkezek_[a-zA-Z0-9_:]*", expr))


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched in its {...} selector) for each selector with labels."""
    found = []
    for name, body in re.findall(r"\b(kezek_[a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        found.append((name, set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", body))))
    return found


def grouping_labels(expr: str) -> set[str]:
    labels = set()
    for body in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in body.split(",") if label.strip()}
    return labels


def test_the_dashboard_uses_at_least_one_metric_per_expression(dashboard):
    found = expressions(dashboard)
    assert found
    for where, expr in found:
        assert metric_names(expr), (where, expr)


def test_every_metric_a_panel_queries_is_exported_by_metrics_py(dashboard):
    exported = exported_series()
    for where, expr in expressions(dashboard):
        unknown = metric_names(expr) - set(exported)
        assert not unknown, f"{where} queries {sorted(unknown)}, which metrics.py does not export"


def test_every_metric_metrics_py_defines_is_on_some_panel(dashboard):
    used = set()
    for _, expr in expressions(dashboard):
        if "label_values(" not in expr:
            used |= metric_names(expr)
    missing = [name for name, metric in defined_metrics().items()
               if not set(series_of(metric)) & used]
    assert not missing, f"no panel shows {missing}"


def test_queries_use_only_labels_the_metrics_carry(dashboard):
    exported = exported_series()
    for where, expr in expressions(dashboard):
        for name, labels in selector_labels(expr):
            assert labels <= exported.get(name, set()) | TARGET_LABELS, (where, name, labels)
        carried = set().union(*(exported.get(name, set()) for name in metric_names(expr)))
        carried |= TARGET_LABELS
        assert grouping_labels(expr) <= carried, (where, expr)
        for name, label in re.findall(r"label_values\(\s*(kezek_\w+)\s*,\s*(\w+)\s*\)", expr):
            assert label in exported.get(name, set()), (where, expr)


def test_legends_name_labels_the_query_keeps(dashboard):
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend_labels <= grouping_labels(target["expr"]), (panel["title"], target)


def test_histograms_are_shown_as_quantiles_grouped_by_bucket(dashboard):
    histograms = {name for name, metric in defined_metrics().items()
                  if metric.describe()[0].type == "histogram"}
    quantiles = set()
    for where, expr in expressions(dashboard):
        if "histogram_quantile" in expr:
            assert "le" in grouping_labels(expr), (where, expr)
            quantiles |= {name.removesuffix("_bucket") for name in metric_names(expr)
                          if name.endswith("_bucket")}
    assert histograms <= quantiles


def test_every_query_goes_to_the_prometheus_input(dashboard):
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == DATASOURCE
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE


def test_panels_have_unique_ids_and_do_not_overlap(dashboard):
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]
