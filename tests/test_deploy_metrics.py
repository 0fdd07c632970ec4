"""deploy/prometheus rules and the deploy/grafana dashboard name only exported metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from cfn_daemon.api.metrics import FAMILIES

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NAME = re.compile(r"\bcfn_[a-z_]+")
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in FAMILIES:
            return name[: -len(suffix)]
    return name


def exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "cfn-alerts.yml").read_text())
    out = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.loads((DEPLOY / "grafana" / "cfn-dashboard.json").read_text())
    out += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    return out


def test_every_metric_a_rule_or_panel_names_is_exported() -> None:
    named = {family(n) for e in exprs() for n in NAME.findall(e)}
    assert named, "no metric names found"
    assert named <= set(FAMILIES), named - set(FAMILIES)


def test_the_check_catches_a_wrong_name() -> None:
    assert family("cfn_tasks_done_total") == "cfn_tasks_done"
    assert family("cfn_task_done_total") not in FAMILIES
