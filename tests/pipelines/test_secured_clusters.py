"""esrerank against secured clusters, as users run it: the CLI in its own process, TLS with the cluster's own
CA, users holding exactly the privileges docs/engines.md lists, a service-account token, and every output
searched for the secrets.

The servers: `bash .ci/servers.sh start secure` (OpenSearch 2.19.1 with its security plugin on 9203,
Elasticsearch 9.1.0 with x-pack-security on 9204, certificates made by openssl at start; users, passwords and
the token in $ESRERANK_SERVER_RUN/secure/credentials.json). Each secured command is compared with the same
command on an unsecured node of the same release: OpenSearch 2.19.1 on 9202 (`servers.sh start opensearch-ml`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engines_support import require_server

RUN_ROOT = Path(os.environ.get("ESRERANK_SERVER_RUN", "/tmp/esrerank-servers"))
ALIAS = "sec-vaswani"  # the readers' roles cover sec-* alone
QUERIES = ["measurement of dielectric constant of liquids", "electron beam focusing"]

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def credentials() -> dict:
    path = Path(os.environ.get("ESRERANK_SECURE_CREDENTIALS", RUN_ROOT / "secure" / "credentials.json"))
    if not path.is_file():
        message = f"no secured servers ({path} missing); start them with: bash .ci/servers.sh start secure"
        if os.environ.get("ESRERANK_REQUIRE_SERVERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return json.loads(path.read_text())


def secrets_of(credentials: dict) -> list[str]:
    """Every secret of the run, in the forms a leak could take (as given, and as a basic-auth header)."""
    found = []
    for engine in ("opensearch", "elasticsearch"):
        for user, password in credentials[engine]["users"].items():
            found += [password, base64.b64encode(f"{user}:{password}".encode()).decode()]
    found.append(credentials["elasticsearch"]["service_token"])
    return found


class Cli:
    """Runs ``esrerank`` in its own process and keeps everything it printed, for the leak search."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.outputs: list[tuple[str, str]] = []

    def __call__(self, *args: str, env: dict | None = None, expect: int = 0) -> subprocess.CompletedProcess:
        environment = {**os.environ, **(env or {})}
        for name in ("ESRERANK_ENGINE_PASSWORD", "ESRERANK_ENGINE_TOKEN", "ESRERANK_ENGINE_API_KEY"):
            if name not in (env or {}):
                environment.pop(name, None)
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=self.workdir, env=environment,
                              capture_output=True, text=True, timeout=600)
        self.outputs.append((" ".join(args), done.stdout + done.stderr))
        assert done.returncode == expect, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done


def secret_file(folder: Path, name: str, secret: str) -> str:
    path = folder / name
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return str(path)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one line an error ends with (warnings before it are log lines)."""
    lines = [line for line in done.stderr.splitlines() if line.startswith("esrerank: error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def opensearch_runs(credentials, tmp_path_factory, vaswani, spread_cross_encoder):
    """Every engine command through the secured OpenSearch (as indexer and reader) and the same commands on
    the unsecured 2.19.1 node: (outputs by route, the Cli with everything printed, the work folder)."""
    plain_url = require_server("opensearch-ml")
    secure = credentials["opensearch"]
    work = tmp_path_factory.mktemp("secured-opensearch")
    cli = Cli(work)
    users = secure["users"]
    indexer_file = secret_file(work, "indexer.password", users["indexer"])
    model = str(spread_cross_encoder)
    routes = {
        # the indexer's password from a file; the reader's from the environment, then from the URL
        "secure": {"index": ["--url", secure["url"], "--ca-certs", credentials["ca_certs"], "--user", "indexer",
                             "--password-file", indexer_file],
                   "read": ["--url", secure["url"], "--ca-certs", credentials["ca_certs"], "--user", "reader"],
                   "env": {"ESRERANK_ENGINE_PASSWORD": users["reader"]}},
        "plain": {"index": ["--url", plain_url], "read": ["--url", plain_url], "env": {}},
    }
    outputs: dict[str, dict] = {}
    for route, how in routes.items():
        out = work / route
        out.mkdir()
        cli("index", "--data", str(vaswani), "--engine", "opensearch", "--index", ALIAS, "--workers", "2",
            "--dead-letter", str(out / "dead.jsonl"), *how["index"])
        engine = ["--retriever", "opensearch", "--index", ALIAS, *how["read"]]
        cli("evaluate", "--data", str(vaswani), "--model", "none", "--save-run", str(out / "bm25.run"),
            "--output-json", str(out / "bm25.json"), "-q", *engine, env=how["env"])
        cli("evaluate", "--data", str(vaswani), "--model", model, "--retrieve-k", "100", "--rerank-k", "20",
            "--save-run", str(out / "reranked.run"), "--output-json", str(out / "reranked.json"), *engine,
            env=how["env"])
        searched = cli("search", *QUERIES, "--model", model, "--rerank-k", "20", *engine, env=how["env"])
        cli("mine", "--data", str(vaswani), "--split", "test", "--out", str(out / "mined"), "--retrieve-k", "30",
            "--range-max", "30", *engine, env=how["env"])
        cli("rerank", "--data", str(vaswani), "--candidates", str(out / "bm25.run"), "--model", model,
            "--rerank-k", "10", "--out", str(out / "rerank.run"), "--devices", "cpu",
            *engine, env=how["env"])
        outputs[route] = {"search": searched.stdout, "folder": out}
    # the password in the URL works too (percent-decoded), with its warning
    in_url = secure["url"].replace("https://", f"https://reader:{users['reader'].replace('%', '%25')}@")
    warned = cli("evaluate", "--data", str(vaswani), "--model", "none", "--retriever", "opensearch", "--index",
                 ALIAS, "--url", in_url, "--ca-certs", credentials["ca_certs"], "-q",
                 "--output-json", str(work / "secure" / "bm25-url.json"))
    outputs["password_in_url"] = {"stdout": warned.stdout, "stderr": warned.stderr}
    return outputs, cli, work


def test_secured_opensearch_commands_equal_the_unsecured_node(opensearch_runs):
    outputs, _, _ = opensearch_runs
    secure, plain = outputs["secure"]["folder"], outputs["plain"]["folder"]
    for name in ("bm25.run", "bm25.json", "reranked.run", "reranked.json", "rerank.run", "mined/stats.json"):
        assert (secure / name).read_bytes() == (plain / name).read_bytes(), name
    assert (secure / "bm25.run").stat().st_size > 10_000  # a real run: 93 queries x 1000
    assert outputs["secure"]["search"] == outputs["plain"]["search"]
    assert outputs["secure"]["search"].count("query ") == len(QUERIES)
    assert json.loads((secure / "bm25-url.json").read_text()) == json.loads((secure / "bm25.json").read_text())
    assert "other users of this machine" in outputs["password_in_url"]["stderr"]


def test_no_secret_in_any_output_or_written_file(opensearch_runs, credentials):
    _, cli, work = opensearch_runs
    secrets = secrets_of(credentials)
    assert secrets and all(len(secret) >= 8 for secret in secrets)
    for command, printed in cli.outputs:
        for secret in secrets:
            assert secret not in printed, f"a secret in the output of: {command}"
    written = [path for path in work.rglob("*") if path.is_file() and not path.name.endswith(".password")]
    assert len(written) > 10
    for path in written:
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"a secret in {path}"
    # the URL is shown, redacted, where the first stage is described
    assert any("https://reader:***@localhost:9203" in printed for _, printed in cli.outputs)
