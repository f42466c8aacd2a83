"""The compose files are valid Compose files: every Compose tool found here accepts them with `config`
(which loads, interpolates and validates them against the Compose Specification). No Docker engine is
needed, and none runs here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _compose_tools() -> dict[str, list[str]]:
    """Docker Compose v2 (ESRERANK_COMPOSE_V2, as .ci/run installs it, or the `docker compose` plugin) and
    docker-compose 1.x, which rejects some `$` uses that v2 lets through."""
    tools = {}
    if os.environ.get("ESRERANK_COMPOSE_V2"):
        tools["compose v2"] = [os.environ["ESRERANK_COMPOSE_V2"]]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        tools["compose v2"] = ["docker", "compose"]
    if shutil.which("docker-compose"):
        version = subprocess.run(["docker-compose", "version", "--short"], capture_output=True, text=True).stdout
        tools[f"docker-compose {version.strip()}"] = ["docker-compose"]
    return tools


@pytest.mark.parametrize("compose_file", sorted(DOCKER.glob("compose.*.yml")), ids=lambda p: p.name)
def test_compose_file_is_valid(compose_file):
    tools = _compose_tools()
    if not tools:
        if os.environ.get("ESRERANK_REQUIRE_COMPOSE") == "1":
            pytest.fail("no Compose tool to validate the compose files with")
        pytest.skip("no docker compose / docker-compose installed")
    for name, command in tools.items():
        result = subprocess.run([*command, "-f", str(compose_file), "config", "-q"], capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_there_is_a_compose_file_per_engine():
    assert {p.name for p in DOCKER.glob("compose.*.yml")} == {"compose.elasticsearch.yml", "compose.opensearch.yml"}
