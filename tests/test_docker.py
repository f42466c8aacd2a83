"""docker/: the compose files are valid Compose files (every Compose tool found here accepts them with
`config`, which loads, interpolates and validates them against the Compose Specification), and the
Dockerfile does what the compose files and the README rely on, read instruction by instruction: the
files it COPYs are installed by its own pip command into a folder, and the CLI installed there parses
its ENTRYPOINT with every command the compose files and examples give it. No Docker engine is needed,
and none runs here."""

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


# --- what the Dockerfile does, read instruction by instruction (no Docker engine runs here) ------------

REPO = DOCKER.parent
DOCKERFILE = DOCKER / "Dockerfile"
# python3 of each Ubuntu LTS release (packages.ubuntu.com): the image's Python must satisfy requires-python
UBUNTU_PYTHON = {"20.04": "3.8", "22.04": "3.10", "24.04": "3.12"}


def _instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comment lines dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _one(keyword: str) -> str:
    found = [arguments for name, arguments in _instructions() if name == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def _exec_form(keyword: str) -> list[str]:
    import json

    value = json.loads(_one(keyword))  # the JSON (exec) form: no shell, so signals reach esrerank itself
    assert isinstance(value, list) and all(isinstance(part, str) for part in value)
    return value


def _env() -> dict[str, str]:
    import shlex

    env = {}
    for name, arguments in _instructions():
        if name == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(arguments))
    return env


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _compose(name: str) -> dict:
    import yaml

    return yaml.safe_load((DOCKER / name).read_text())


def _exposed_port() -> int:
    return int(_one("EXPOSE").split("/")[0])


def test_base_image_is_a_pinned_cuda_runtime_whose_python_the_project_accepts():
    import re

    from packaging.specifiers import SpecifierSet

    image = _one("FROM")
    match = re.fullmatch(r"nvidia/cuda:(\d+\.\d+\.\d+)-(?:cudnn-)?runtime-ubuntu(\d+\.\d+)", image)
    assert match, f"not a pinned CUDA runtime image: {image}"
    python = UBUNTU_PYTHON[match.group(2)]
    assert python in SpecifierSet(_pyproject()["project"]["requires-python"]), (image, python)


def test_the_image_installs_the_tools_its_later_steps_use():
    import shlex

    runs = [arguments for name, arguments in _instructions() if name == "RUN"]
    installed = set()
    for command in runs:
        for step in command.split("&&"):
            words = shlex.split(step)
            if words[:2] == ["apt-get", "install"]:
                installed.update(word for word in words[2:] if not word.startswith("-"))
    # python3 and its venv module for `python3 -m venv`, curl for the HEALTHCHECK
    assert {"python3", "python3-venv"} <= installed
    assert "curl" in installed and _one("HEALTHCHECK").split(" CMD ", 1)[1].startswith("curl ")
    venvs = [shlex.split(command)[3] for command in runs if shlex.split(command)[:3] == ["python3", "-m", "venv"]]
    assert len(venvs) == 1
    # `pip` and `esrerank` in later steps are the venv's: its bin folder comes first on PATH
    assert _env()["PATH"].split(":")[0] == f"{venvs[0]}/bin"
    # the model cache lives where the compose files mount their models volume
    assert _env()["HF_HOME"] == "/models"


@pytest.fixture(scope="module")
def image_install(tmp_path_factory):
    """What `docker build` would put in the image: the build context's COPYed files at WORKDIR, installed by
    the Dockerfile's own pip command (dependencies left out: this environment has them). Returns
    (the installed site folder, the pip command's target)."""
    import shlex
    import sys

    root = tmp_path_factory.mktemp("image")
    workdir = None
    pip_target = None
    for name, arguments in _instructions():
        if name == "WORKDIR":
            workdir = root / arguments.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif name == "COPY":
            *sources, destination = shlex.split(arguments)
            assert not any(s.startswith("--") for s in sources), "COPY options are not read here"
            target = workdir / destination
            for source in sources:
                path = REPO / source
                assert path.exists(), f"COPY {source}: not in the repository"
                if path.is_dir():
                    shutil.copytree(path, target if len(sources) == 1 and not destination.endswith("/")
                                    else target / path.name, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    (target if destination.endswith("/") or target.is_dir() else target.parent).mkdir(
                        parents=True, exist_ok=True)
                    shutil.copy(path, target / path.name if destination.endswith("/") else target)
        elif name == "RUN" and "pip install" in arguments:
            words = shlex.split(arguments)
            start = words.index("pip")
            assert words[start + 1] == "install"
            pip_target = [w for w in words[start + 2:] if not w.startswith("-")]
    assert workdir is not None and pip_target is not None and len(pip_target) == 1, pip_target
    site = root / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                             "--target", str(site), pip_target[0]], cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return site, pip_target[0]


def test_pip_installs_the_copied_project_with_extras_that_exist(image_install):
    import re

    _, target = image_install
    match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
    assert match, f"pip installs {target!r}, not the project copied to WORKDIR"
    extras = set(filter(None, (match.group(1) or "").split(",")))
    assert extras <= set(_pyproject()["project"].get("optional-dependencies", {})), extras


def test_everything_the_installed_code_imports_from_the_repository_is_installed(image_install):
    # A top-level module of the repository (a package, or a module file such as esrerank_errors.py) that the
    # installed code imports must be in the image: COPYed and packaged by pyproject.toml.
    import ast

    site, _ = image_install
    ours = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()} | \
        {p.stem for p in REPO.glob("*.py")}
    installed = {p.name for p in site.iterdir() if (p / "__init__.py").is_file()} | {p.stem for p in site.glob("*.py")}
    assert {"retrieval", "rerank", "pipelines"} <= installed
    missing = {}
    for source in site.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top in ours and top not in installed:
                    missing.setdefault(top, source.relative_to(site).as_posix())
    assert not missing, f"imported by the installed code but not in the image (module: first importer): {missing}"


def _parse_with_installed_cli(site: Path, argvs: list[list[str]]) -> list[dict]:
    """Each argv parsed by the CLI as installed in the image (site first on the path, no site-packages .pth
    files, so nothing of this checkout's editable install is used), and its console script."""
    import json
    import sys
    import sysconfig

    program = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(site)!r}]\n"
        f"sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
        "from importlib.metadata import distribution\n"
        f"dist = distribution('esrerank')\n"
        "scripts = {e.name: e.value for e in dist.entry_points if e.group == 'console_scripts'}\n"
        "from pipelines.cli import build_parser\n"
        "results = []\n"
        f"for argv in json.loads({json.dumps(json.dumps(argvs))}):\n"
        "    try:\n"
        "        args = build_parser().parse_args(argv)\n"
        "        results.append({k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, type(None)))})\n"
        "    except SystemExit as exc:\n"
        "        results.append({'exit': exc.code})\n"
        "print(json.dumps({'scripts': scripts, 'file': sys.modules['pipelines'].__file__, 'results': results}))\n"
    )
    result = subprocess.run([sys.executable, "-S", "-c", program], cwd=site.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    assert Path(answer["file"]).is_relative_to(site), answer["file"]  # the image's copy, not the checkout
    return answer


def test_entrypoint_and_every_command_given_to_it_parse_with_the_installed_cli(image_install):
    import shlex

    site, _ = image_install
    entrypoint, default = _exec_form("ENTRYPOINT"), _exec_form("CMD")
    commands = {"CMD": default}
    for name in ("compose.elasticsearch.yml", "compose.opensearch.yml"):
        commands[name] = _compose(name)["services"]["reranker"]["command"]
    # the `docker run` example in the Dockerfile's header: what follows the image name goes to the entrypoint
    run_example = next(line for line in DOCKERFILE.read_text().splitlines() if "docker run" in line)
    commands["docker run example"] = shlex.split(run_example.split("esrerank-serve", 1)[1])
    answer = _parse_with_installed_cli(site, [entrypoint[1:] + argv for argv in commands.values()])
    # the entrypoint is a console script of the installed distribution, the one pyproject.toml declares
    assert entrypoint[0] in answer["scripts"]
    assert answer["scripts"][entrypoint[0]] == _pyproject()["project"]["scripts"][entrypoint[0]]
    for (source, argv), parsed in zip(commands.items(), answer["results"]):
        assert "exit" not in parsed, f"{source}: esrerank {' '.join(entrypoint[1:] + argv)} is refused by the CLI"
        assert parsed["command"] == "serve" and parsed["host"] == "0.0.0.0", source  # reachable from outside
        assert parsed["port"] == _exposed_port(), source
        assert parsed["model"] == argv[argv.index("--model") + 1], source


def test_readme_commands_parse_with_the_cli():
    import shlex

    from pipelines.cli import build_parser

    lines = [line.strip() for line in (DOCKER / "README.md").read_text().splitlines()
             if line.strip().startswith("esrerank ")]
    assert any(" register opensearch " in line for line in lines) and any(" register elasticsearch " in line
                                                                           for line in lines)
    for line in lines:
        parsed = build_parser().parse_args(shlex.split(line)[1:])  # argparse exits on an unknown flag
        assert parsed.command == shlex.split(line)[1]


def test_healthcheck_probes_the_exposed_port_on_a_route_answered_without_the_key(tiny_cross_encoder):
    import http.client
    from urllib.parse import urlsplit

    from rerank.cross_encoder import CrossEncoder
    from rerank.service import RerankService

    probe = next(word for word in _one("HEALTHCHECK").split() if word.startswith("http"))
    url = urlsplit(probe)
    assert url.port == _exposed_port() and url.hostname in ("127.0.0.1", "localhost")
    # the compose files pass ESRERANK_API_KEY and the probe sends no key: the route must not need one
    running = RerankService(CrossEncoder(str(tiny_cross_encoder), max_length=64, dtype="float32"), port=0,
                            api_key="compose-key").start()
    try:
        host, port = running.server.server_address[:2]
        for path, expected in ((url.path, 200), ("/metrics", 401)):  # 401: the key is in force
            connection = http.client.HTTPConnection(host, port, timeout=30)
            connection.request("GET", path)
            assert connection.getresponse().status == expected, path
            connection.close()
    finally:
        running.close()


@pytest.mark.parametrize("name", ["compose.elasticsearch.yml", "compose.opensearch.yml"])
def test_compose_reranker_builds_this_image_and_wires_port_models_and_key(name, monkeypatch):
    from pipelines.cli.options import read_api_key

    reranker = _compose(name)["services"]["reranker"]
    context = (DOCKER / reranker["build"]["context"]).resolve()
    assert context == REPO.resolve() and (context / reranker["build"]["dockerfile"]).resolve() == DOCKERFILE.resolve()
    assert [port.split(":")[-1] for port in reranker["ports"]] == [str(_exposed_port())]
    assert any(volume.split(":")[1] == _env()["HF_HOME"] for volume in reranker["volumes"])  # models survive restarts
    passed = [entry for entry in reranker["environment"] if "=" not in entry]  # names passed from the host
    assert passed == ["ESRERANK_API_KEY"]
    monkeypatch.setenv(passed[0], "from-the-host")
    assert read_api_key(None) == "from-the-host"  # the variable `esrerank serve` reads its key from
