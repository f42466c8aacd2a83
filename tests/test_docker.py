"""The compose files are valid Compose files: `docker compose config` (or Debian's docker-compose) accepts
them, with interpolation resolved. No Docker engine is needed, and none runs here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("compose_file", sorted(DOCKER.glob("compose.*.yml")), ids=lambda p: p.name)
def test_compose_file_is_valid(compose_file):
    command = _compose_command()
    if command is None:
        if os.environ.get("ESRERANK_REQUIRE_COMPOSE") == "1":
            pytest.fail("no docker compose / docker-compose to validate the compose files with")
        pytest.skip("no docker compose / docker-compose installed")
    result = subprocess.run([*command, "-f", str(compose_file), "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_there_is_a_compose_file_per_engine():
    assert {p.name for p in DOCKER.glob("compose.*.yml")} == {"compose.elasticsearch.yml", "compose.opensearch.yml"}
