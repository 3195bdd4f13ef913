"""deploy/kubernetes passes scripts/check_manifests.py, and the check fails where it should."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "check_manifests.py"
MANIFESTS = ROOT / "deploy" / "kubernetes"
DASHBOARD = ROOT / "deploy" / "grafana" / "scriptserve-dashboard.json"

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None or shutil.which("promtool") is None,
    reason="needs kubectl (kubectl kustomize) and promtool (Debian: apt-get install prometheus)",
)


def check(root: Path = MANIFESTS, dashboard: Path = DASHBOARD) -> tuple[int, list[str], str]:
    result = subprocess.run([sys.executable, str(CHECK), "--root", str(root), "--dashboard", str(dashboard)],
                            capture_output=True, text=True, timeout=240)
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    return result.returncode, failures, result.stdout.splitlines()[-1] if result.stdout else result.stderr


def test_every_overlay_renders_and_passes():
    code, failures, summary = check()
    assert code == 0 and failures == [], failures
    print(summary)
    rendered = int(summary.split()[0])
    assert rendered >= 30 and " 0 failed" in summary


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MANIFESTS, tmp_path / "kubernetes"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    ("base/pdb.yaml", "  maxUnavailable: 1", "  maxUnavailable: 1\n  replica: 2",
     "base: PodDisruptionBudget/scriptserve (Kubernetes 1.37.0, strict): Additional properties are not "
     "allowed ('replica' was unexpected)"),
    ("base/deployment.yaml", "readinessProbe:", "readinesProbe:", "'readinesProbe' was unexpected"),
    ("kserve/clusterservingruntime.yaml", "  containers:", "  containerss:",
     "kserve: ClusterServingRuntime/scriptserve (clusterservingruntime.serving.kserve.io-v1alpha1.json): "
     "spec: Additional properties are not allowed ('containerss' was unexpected)"),
    ("kserve/inferenceservice.yaml", "      storageUri:", "      storageURI:", "'storageURI' was unexpected"),
    ("components/autoscale-keda/scaledobject.yaml", "  minReplicaCount:", "  minReplicasCount:",
     "'minReplicasCount' was unexpected"),
    ("components/autoscale-hpa/servicemonitor.yaml", "    - port: http", "    - port: metrics",
     "ServiceMonitor/scriptserve scrapes port 'metrics' of a rendered Service"),
    ("components/autoscale-hpa/prometheus-adapter-values.yaml", "metricsQuery:", "metricQuery:",
     "'metricQuery' was unexpected"),
    ("base/deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 30",
     "grace period 30s covers preStop + drain (40s)"),
    ("base/settings.env", "SCRIPTSERVE_SHUTDOWN_GRACE_S=30", "SCRIPTSERVE_SHUTDOWN_GRACE_S=60",
     "grace period 45s covers preStop + drain (70s)"),
])
def test_a_typo_fails_the_check(copy, file, old, new, expected):
    edit(copy / file, old, new)
    code, failures, _ = check(copy)
    assert code == 1
    assert any(expected in line for line in failures), failures


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    ("components/autoscale-keda/scaledobject.yaml", "query: sum(avg_over_time(",
     "query: sum(avg_over_time((",
     "PromQL parses: overlays/shared-store-pvc-keda: ScaledObject/scriptserve trigger"),
    ("components/autoscale-hpa/prometheus-adapter-values.yaml", "[1m]))", "[1m])",
     "PromQL parses: components/autoscale-hpa/prometheus-adapter-values.yaml rule 0 metricsQuery"),
])
def test_bad_promql_fails_the_check(copy, file, old, new, expected):
    edit(copy / file, old, new)
    code, failures, _ = check(copy)
    assert code == 1 and any(expected in line and "parse error" in line for line in failures), failures


def test_bad_promql_in_the_dashboard_fails_the_check(tmp_path):
    dashboard = tmp_path / "dashboard.json"
    text = DASHBOARD.read_text()
    dashboard.write_text(text.replace("sum by (status) (rate(", "sum by (status) (rate((", 1))
    code, failures, _ = check(dashboard=dashboard)
    assert code == 1 and len(failures) == 1 and "dashboard.json panel" in failures[0], failures
