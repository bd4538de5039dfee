"""deploy/alerts.yaml names only metrics that exist (a renamed metric must not leave an alert
that can never fire), and every alert links to its entry in docs/operations.md."""

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import realtime.core.metrics  # noqa: F401 - defines the metrics

ROOT = Path(__file__).resolve().parents[1]
RULES = yaml.safe_load((ROOT / "deploy" / "alerts.yaml").read_text())
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


def _exposed_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
    # Histogram and labelled metrics without observations expose no samples yet.
    for family in REGISTRY.collect():
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def test_alerts_use_existing_metrics_and_have_a_runbook_entry():
    exposed = _exposed_names()
    rules = [r for group in RULES["groups"] for r in group["rules"]]
    assert len(rules) >= 10
    for rule in rules:
        for metric in re.findall(r"\b(tether_[a-z_]+)", rule["expr"]):
            assert metric in exposed, f"{rule['alert']}: no metric {metric}"
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert f"### {rule['alert']}" in OPERATIONS and anchor == rule["alert"].lower(), rule["alert"]
