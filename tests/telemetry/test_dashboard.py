"""The Grafana dashboard asks only for metrics the server exports, in valid PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import upload

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "scriptserve-dashboard.json"
# Metrics that exist only on a CUDA machine, or once the compiler has run.
CONDITIONAL = {"scriptserve_cuda_memory_allocated_bytes"}


def expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_the_dashboard_is_well_formed():
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and doc["uid"] == "scriptserve-overview"
    names = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "job", "model", "version"} <= names
    assert all(t["datasource"]["uid"] == "${datasource}"
               for p in doc["panels"] for t in p.get("targets", []))
    assert len(expressions()) >= 20


def test_every_queried_metric_is_exported(client, archives):
    assert upload(client, "classifier", archives["classifier"]).status_code == 201
    client.post("/models/classifier/predict", json={"inputs": [[0.5] * 320]})
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    exported = set()  # families without samples yet (labelled, never used) count too
    for family in text_string_to_metric_families(client.get("/metrics").text):
        exported |= {family.name + s for s in suffixes.get(family.type, [""])}
    queried = {m for e in expressions() for m in re.findall(r"\b(?:scriptserve|process)_\w+", e)}
    assert queried - exported - CONDITIONAL == set()


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian: apt-get install prometheus)")
def test_every_expression_parses_as_promql(tmp_path):
    rules = tmp_path / "rules.yml"
    lines = ["groups:", "- name: dashboard", "  rules:"]
    for i, expr in enumerate(expressions()):
        concrete = (expr.replace("$__rate_interval", "1m").replace("$model", ".*")
                    .replace("$version", ".*").replace("$job", ".*"))
        lines += [f"  - record: dashboard:expr{i}", f"    expr: {json.dumps(concrete)}"]
    rules.write_text("\n".join(lines) + "\n")
    result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                            timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
