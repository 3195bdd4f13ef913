#!/usr/bin/env python3
"""Check every Kubernetes manifest in deploy/kubernetes offline.

1. Render each kustomization (``kubectl kustomize``): base, every overlay, kserve.
2. Core kinds against the Kubernetes API schemas with ``kubernetes-validate`` in strict mode
   (unknown fields fail), for each ``--kubernetes-version``.
3. Custom resources (ClusterServingRuntime, InferenceService, ScaledObject, ServiceMonitor)
   against the JSON schemas in deploy/kubernetes/schemas (from the real CRDs, closed where the
   CRD is: scripts/crd_schema.py), and prometheus-adapter values against theirs.
4. What a schema cannot see: references between the rendered objects (autoscaler targets,
   ServiceMonitor ports, probe ports), a grace period that covers preStop + the server's
   drain, KEDA Prometheus trigger keys.
5. Every PromQL expression (the adapter rule, KEDA triggers, the Grafana dashboard) parses:
   ``promtool check rules`` on a generated rules file.

Usage: scripts/check_manifests.py [--root deploy/kubernetes] [--dashboard FILE]
Prints one line per check and a summary; exit 0 when everything passes, 1 otherwise, 2 when
kubectl or promtool is missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[1]
VERSIONS = ("1.34.0", "1.37.0")
DEFAULT_DRAIN_S = 30.0  # SCRIPTSERVE_SHUTDOWN_GRACE_S when unset (app/config.py)
KEDA_PROMETHEUS_KEYS = {  # keda pkg/scalers/prometheus_scaler.go, prometheusMetadata
    "serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders",
    "ignoreNullValues", "unsafeSsl", "queryParameters", "authModes", "timeout",
}
ADAPTER_TEMPLATES = {"<<.Series>>": "scriptserve_requests_in_flight",
                     "<<.LabelMatchers>>": 'namespace="default",pod=~"scriptserve-.*"',
                     "<<.GroupBy>>": "pod"}


@dataclass
class Report:
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    expressions: list[tuple[str, str]] = field(default_factory=list)  # (where, PromQL)

    def check(self, ok: bool, what: str, why: str = "") -> None:
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failures.append(f"{what}: {why}")
            print(f"FAIL  {what}: {why}")


def kustomizations(root: Path) -> list[Path]:
    """Folders with a Kustomization (components are checked through the overlays using them)."""
    found = []
    for path in sorted(root.rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if doc.get("kind", "Kustomization") == "Kustomization":
            found.append(path.parent)
    return found


def render(folder: Path) -> tuple[list[dict[str, Any]], str]:
    result = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0:
        return [], result.stderr.strip()[-2000:]
    return [d for d in yaml.safe_load_all(result.stdout) if d], ""


def schema_for(schemas: Path, doc: dict[str, Any]) -> Path:
    group, _, version = doc["apiVersion"].rpartition("/")
    return schemas / f"{doc['kind'].lower()}.{group}-{version}.json"


def is_core(doc: dict[str, Any]) -> bool:
    """Kinds of Kubernetes itself (no group, or a *.k8s.io / built-in group)."""
    group = doc["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"


def first_error(validator: jsonschema.Validator, doc: Any) -> str:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return ""
    e = errors[0]
    where = ".".join(str(p) for p in e.absolute_path) or "(top)"
    return f"{where}: {e.message[:300]}" + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")


def check_schemas(docs: list[dict[str, Any]], label: str, schemas: Path, versions: tuple[str, ...],
                  report: Report) -> None:
    for doc in docs:
        what = f"{label}: {name_of(doc)}"
        if is_core(doc):
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    report.check(True, f"{what} (Kubernetes {version}, strict)")
                except (kubernetes_validate.ValidationError,
                        kubernetes_validate.SchemaNotFoundError) as exc:
                    report.check(False, f"{what} (Kubernetes {version}, strict)",
                                 str(exc).splitlines()[0][:400])
            continue
        path = schema_for(schemas, doc)
        if not path.is_file():
            report.check(False, what, f"no schema {path.name} in {schemas}")
            continue
        validator = jsonschema.Draft202012Validator(json.loads(path.read_text()))
        error = first_error(validator, doc)
        report.check(not error, f"{what} ({path.name})", error)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] == "ClusterServingRuntime":
        return list(spec.get("containers", []))
    return list(spec.get("template", {}).get("spec", {}).get("containers", []))


def sleep_seconds(container: dict[str, Any]) -> int:
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return int(pre["sleep"].get("seconds", 0))
    command = pre.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep" and str(command[1]).isdigit():
        return int(command[1])
    return 0


def drain_seconds(container: dict[str, Any], config_maps: dict[str, dict[str, Any]]) -> float:
    """The server's drain (``SCRIPTSERVE_SHUTDOWN_GRACE_S``) as the container gets it: its own
    ``env`` over the ConfigMaps of its ``envFrom``, else the server's default."""
    found = DEFAULT_DRAIN_S
    for source in container.get("envFrom", []):
        data = config_maps.get(source.get("configMapRef", {}).get("name", ""), {}).get("data", {})
        if "SCRIPTSERVE_SHUTDOWN_GRACE_S" in data:
            found = float(data["SCRIPTSERVE_SHUTDOWN_GRACE_S"])
    for var in container.get("env", []):
        if var.get("name") == "SCRIPTSERVE_SHUTDOWN_GRACE_S" and "value" in var:
            found = float(var["value"])
    return found


def check_references(docs: list[dict[str, Any]], label: str, report: Report) -> None:
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    for doc in docs:
        what = f"{label}: {name_of(doc)}"
        spec = doc.get("spec", {})
        if doc["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"}:
            target = spec.get("scaleTargetRef", {})
            kind = target.get("kind", "Deployment")
            report.check(target.get("name") in by_kind.get(kind, {}), f"{what} targets a rendered {kind}",
                         f"no {kind} named {target.get('name')!r} in this overlay")
        if doc["kind"] == "ServiceMonitor":
            wanted = spec.get("selector", {}).get("matchLabels", {})
            services = [s for s in by_kind.get("Service", {}).values()
                        if wanted.items() <= s["metadata"].get("labels", {}).items()]
            ports = {p.get("name") for s in services for p in s["spec"].get("ports", [])}
            for endpoint in spec.get("endpoints", []):
                report.check(bool(services) and endpoint.get("port") in ports,
                             f"{what} scrapes port {endpoint.get('port')!r} of a rendered Service",
                             f"Services matching {wanted}: {[s['metadata']['name'] for s in services]}, "
                             f"ports {sorted(p for p in ports if p)}")
        if doc["kind"] == "ScaledObject":
            for trigger in spec.get("triggers", []):
                if trigger.get("type") != "prometheus":
                    continue
                meta = trigger.get("metadata", {})
                unknown = sorted(set(meta) - KEDA_PROMETHEUS_KEYS)
                missing = sorted({"serverAddress", "query", "threshold"} - set(meta))
                report.check(not unknown and not missing, f"{what} prometheus trigger keys",
                             f"unknown {unknown}, missing {missing}")
                if "query" in meta:
                    report.expressions.append((f"{what} trigger", meta["query"]))
        if doc["kind"] in {"Deployment", "ClusterServingRuntime"}:
            for c in containers(doc):
                ports = {p.get("name") for p in c.get("ports", [])} | {
                    p.get("containerPort") for p in c.get("ports", [])}
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    if port is not None:
                        report.check(port in ports, f"{what} {c['name']} {probe} port {port!r} is declared",
                                     f"container ports: {sorted(map(str, ports - {None}))}")
        if doc["kind"] == "Deployment":
            pod = spec.get("template", {}).get("spec", {})
            grace = int(pod.get("terminationGracePeriodSeconds", 30))
            for c in containers(doc):
                need = sleep_seconds(c) + drain_seconds(c, by_kind.get("ConfigMap", {}))
                report.check(grace >= need,
                             f"{what} grace period {grace}s covers preStop + drain ({need:g}s)",
                             "raise terminationGracePeriodSeconds")


def adapter_values(root: Path, schemas: Path, report: Report) -> None:
    schema = json.loads((schemas / "prometheus-adapter-values.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(root.rglob("prometheus-adapter-values.yaml")):
        what = f"{path.relative_to(root)}"
        doc = yaml.safe_load(path.read_text())
        error = first_error(validator, doc)
        report.check(not error, f"{what} (prometheus-adapter-values.json)", error)
        for i, rule in enumerate((doc or {}).get("rules", {}).get("custom", []) or []):
            query = rule.get("metricsQuery", "")
            for template, concrete in ADAPTER_TEMPLATES.items():
                query = query.replace(template, concrete)
            report.expressions.append((f"{what} rule {i} metricsQuery", query))
            series = rule.get("seriesQuery", "")
            report.expressions.append((f"{what} rule {i} seriesQuery", series))


def dashboard_expressions(path: Path, report: Report) -> None:
    doc = json.loads(path.read_text())
    for panel in doc.get("panels", []):
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
                    .replace("$version", ".*").replace("$job", ".*"))
            where = f"{path.name} panel {panel.get('id')} {panel.get('title', '')!r}"
            report.expressions.append((where, expr))


def check_promql(report: Report) -> None:
    """One recording rule per expression; on a failure, each alone to name the culprit."""
    def run(exprs: list[tuple[str, str]]) -> tuple[bool, str]:
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "rules.yml"
            group = {"name": "check", "rules": [{"record": f"check:expr{i}", "expr": e}
                                                for i, (_, e) in enumerate(exprs)]}
            rules.write_text(yaml.safe_dump({"groups": [group]}))
            result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                                    text=True, timeout=60)
            return result.returncode == 0, (result.stdout + result.stderr).strip()
    ok, _ = run(report.expressions)
    if ok:
        for where, _ in report.expressions:
            report.check(True, f"PromQL parses: {where}")
        return
    for where, expr in report.expressions:
        good, output = run([(where, expr)])
        report.check(good, f"PromQL parses: {where}", output.splitlines()[-1][:300] if output else expr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / "deploy" / "kubernetes")
    parser.add_argument("--dashboard", type=Path,
                        default=REPO / "deploy" / "grafana" / "scriptserve-dashboard.json")
    parser.add_argument("--kubernetes-version", action="append", dest="versions",
                        help="validate core kinds for this version "
                             f"(repeatable; default {', '.join(VERSIONS)})")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("kubectl", "promtool") if shutil.which(tool) is None]
    if missing:
        print(f"missing {', '.join(missing)} (kubectl: kubernetes.io/docs/tasks/tools; promtool: the "
              "Debian package prometheus)", file=sys.stderr)
        return 2
    root = args.root.resolve()
    schemas = root / "schemas"
    versions = tuple(args.versions or VERSIONS)
    report = Report()
    rendered = 0
    for folder in kustomizations(root):
        label = str(folder.relative_to(root))
        docs, error = render(folder)
        report.check(not error, f"{label}: kubectl kustomize ({len(docs)} objects)", error)
        rendered += len(docs)
        check_schemas(docs, label, schemas, versions, report)
        check_references(docs, label, report)
    adapter_values(root, schemas, report)
    if args.dashboard.is_file():
        dashboard_expressions(args.dashboard, report)
    check_promql(report)
    print(f"\n{rendered} rendered objects, {len(report.expressions)} PromQL expressions: "
          f"{report.passed} checks passed, {len(report.failures)} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
