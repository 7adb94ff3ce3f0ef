"""docker-compose: lmscore, Prometheus and Grafana wired to the repository's own files."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose"


def test_services_and_mounted_files_exist() -> None:
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"lmscore", "prometheus", "grafana"}
    assert (COMPOSE / services["lmscore"]["build"]["context"] / "Dockerfile").exists()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (COMPOSE / source).exists(), volume
    config = yaml.safe_load((COMPOSE / "../prometheus/prometheus.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["lmscore:8000"]  # the compose service's name and port
