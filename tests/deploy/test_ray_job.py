"""The Ray deployment files: the RayJob has what KubeRay's CRD requires, its entrypoint is
a valid ``ray-score`` command, and the headless Service it names selects the lmscore pods."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from lmscore_client.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BASE = DEPLOY / "kubernetes" / "base"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(path: Path) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents(path)}


def test_rayjob_has_the_fields_kuberay_requires() -> None:
    job = by_kind(DEPLOY / "ray" / "rayjob.yaml")["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    containers = [head["template"]["spec"]["containers"][0]]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"]
        assert group["replicas"] <= group["maxReplicas"]
        containers.append(group["template"]["spec"]["containers"][0])
    for container in containers:
        assert container["image"] == "lmscore:cpu"
        assert container["resources"]["limits"]["memory"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())


def test_rayjob_entrypoint_is_a_valid_ray_score_command() -> None:
    job = by_kind(DEPLOY / "ray" / "rayjob.yaml")["RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["lmscore-client", "ray-score"]
    args = build_parser().parse_args(argv[1:])
    assert args.resume and args.resolve_dns and args.url == ["http://lmscore-headless:8000"]


def test_headless_service_selects_the_lmscore_pods() -> None:
    services = {d["metadata"]["name"]: d for d in documents(BASE / "service.yaml")}
    service = services["lmscore-headless"]
    assert service["spec"]["clusterIP"] == "None"
    deployment = by_kind(BASE / "deployment.yaml")["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_the_image_installs_the_ray_extra() -> None:
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert "clients/python[ray]" in dockerfile
    assert "COPY clients/python ./clients/python" in dockerfile
