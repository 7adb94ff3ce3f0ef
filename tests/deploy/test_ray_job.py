"""The Ray deployment files: the RayJob has what KubeRay's CRD requires, its entrypoint is
a valid ``ray-score`` command, and the headless Service it names selects the lmscore pods."""

from __future__ import annotations

import re
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


def test_the_actors_fit_the_cluster_they_ask_for() -> None:
    """Every actor's CPUs, with some left for Ray Data's read and write tasks, fit in the
    workers' CPUs; the head schedules only (num-cpus 0)."""
    job = by_kind(DEPLOY / "ray" / "rayjob.yaml")["RayJob"]
    args = build_parser().parse_args(shlex.split(job["spec"]["entrypoint"])[1:])
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    workers = cluster["workerGroupSpecs"]
    limits = [g["template"]["spec"]["containers"][0]["resources"]["limits"] for g in workers]
    worker_cpus = sum(
        g["replicas"] * float(lim["cpu"]) for g, lim in zip(workers, limits, strict=True)
    )
    assert args.actors * args.num_cpus <= worker_cpus - 1


def test_the_image_has_what_a_rayjob_runs() -> None:
    """Ray's dashboard (the job API a RayJob submits through) and the commands on the PATH
    a login shell keeps (KubeRay before 1.4 starts pods with ``bash -l``)."""
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert "'ray[default]'" in dockerfile
    linked = re.search(r"ln -s ((?:/opt/venv/bin/\S+ )+)/usr/local/bin/", dockerfile)
    assert linked and set(linked.group(1).split()) >= {
        "/opt/venv/bin/ray",
        "/opt/venv/bin/lmscore-client",
        "/opt/venv/bin/lmscore",
    }


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
