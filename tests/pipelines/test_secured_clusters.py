"""esrerank against secured clusters, as users run it: the CLI in its own process, TLS with the cluster's own
CA, users holding exactly the privileges docs/engines.md lists, a service-account token, and every output
searched for the secrets.

The servers: `bash .ci/servers.sh start secure` (OpenSearch 2.19.1 with its security plugin on 9203,
Elasticsearch 9.1.0 with x-pack-security on 9204, certificates made by openssl at start; users, passwords and
the token in $ESRERANK_SERVER_RUN/secure/credentials.json). Each secured command is compared with the same
command on an unsecured node of the same release: OpenSearch 2.19.1 on 9202 (`servers.sh start opensearch-ml`),
Elasticsearch 9.1.0 on 9205 (started with the secured servers).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engines_support import require_server, server_missing

RUN_ROOT = Path(os.environ.get("ESRERANK_SERVER_RUN", "/tmp/esrerank-servers"))
ALIAS = "sec-vaswani"  # the readers' roles cover sec-* alone
API_KEY = "esrerank-key-id:Ap1Key#S3cret-38"  # recognisable: searched for in every output
TOKEN = "Tok3n#S3cret-38-bearer"
QUERIES = ["measurement of dielectric constant of liquids", "electron beam focusing"]

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def credentials() -> dict:
    path = Path(os.environ.get("ESRERANK_SECURE_CREDENTIALS", RUN_ROOT / "secure" / "credentials.json"))
    if not path.is_file():
        server_missing(f"no secured servers ({path} missing); start them with: bash .ci/servers.sh start secure")
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


# engine -> (the unsecured twin's server name, the secured server's settings key)
TWINS = {"opensearch": "opensearch-ml", "elasticsearch": "elasticsearch9"}


def run_every_command(cli: Cli, out: Path, engine: str, index: list[str], read: list[str], env: dict, vaswani,
                      model: str) -> str:
    """index, evaluate (BM25 and reranked), search, mine and rerank through one route; returns search's output."""
    out.mkdir()
    if index:
        # one bulk worker: documents get the same internal order in both indexes, so tied scores list alike
        cli("index", "--data", str(vaswani), "--engine", engine, "--index", ALIAS, "--workers", "1",
            "--dead-letter", str(out / "dead.jsonl"), *index)
    first_stage = ["--retriever", engine, "--index", ALIAS, *read]
    cli("evaluate", "--data", str(vaswani), "--model", "none", "--save-run", str(out / "bm25.run"),
        "--output-json", str(out / "bm25.json"), *first_stage, env=env)
    cli("evaluate", "--data", str(vaswani), "--model", model, "--retrieve-k", "100", "--rerank-k", "20",
        "--save-run", str(out / "reranked.run"), "--output-json", str(out / "reranked.json"), *first_stage, env=env)
    searched = cli("search", *QUERIES, "--model", model, "--rerank-k", "20", *first_stage, env=env)
    cli("mine", "--data", str(vaswani), "--split", "test", "--out", str(out / "mined"), "--retrieve-k", "30",
        "--range-max", "30", *first_stage, env=env)
    cli("rerank", "--data", str(vaswani), "--candidates", str(out / "bm25.run"), "--model", model, "--rerank-k",
        "10", "--out", str(out / "rerank.run"), "--devices", "cpu", *first_stage, env=env)
    return searched.stdout


@pytest.fixture(scope="module", params=["opensearch", "elasticsearch"])
def secured_runs(request, credentials, tmp_path_factory, vaswani, spread_cross_encoder):
    """Every engine command through the secured server (an indexer indexes, a reader with ``read`` alone
    searches) and through its unsecured twin of the same release: (engine, outputs by route, the Cli)."""
    engine = request.param
    plain_url = require_server(TWINS[engine])
    secure = credentials[engine]
    users = secure["users"]
    work = tmp_path_factory.mktemp(f"secured-{engine}")
    cli = Cli(work)
    model = str(spread_cross_encoder)
    tls = ["--url", secure["url"], "--ca-certs", credentials["ca_certs"]]
    indexer = [*tls, "--user", "indexer", "--password-file", secret_file(work, "indexer.password", users["indexer"])]
    # the reader's password from the environment (OpenSearch) or a file (Elasticsearch)
    if engine == "opensearch":
        reader, reader_env = [*tls, "--user", "reader"], {"ESRERANK_ENGINE_PASSWORD": users["reader"]}
    else:
        reader = [*tls, "--user", "reader", "--password-file", secret_file(work, "reader.password", users["reader"])]
        reader_env = {}
    searched = {
        "secure": run_every_command(cli, work / "secure", engine, indexer, reader, reader_env, vaswani, model),
        "plain": run_every_command(cli, work / "plain", engine, ["--url", plain_url], ["--url", plain_url], {},
                                   vaswani, model),
    }
    # the password in the URL works too (percent-decoded), with its warning
    in_url = secure["url"].replace("https://", f"https://reader:{users['reader'].replace('%', '%25')}@")
    warned = cli("evaluate", "--data", str(vaswani), "--model", "none", "--retriever", engine, "--index", ALIAS,
                 "--url", in_url, "--ca-certs", credentials["ca_certs"], "--output-json",
                 str(work / "secure" / "bm25-url.json"))
    assert "other users of this machine" in warned.stderr
    if engine == "elasticsearch":
        # a service-account token (bearer) reads the indices its account may read: admin indexes one there
        token_index = secure["service_token_readable_pattern"].replace("*", "vaswani")
        admin = [*tls, "--user", "admin", "--password-file", secret_file(work, "admin.password", users["admin"])]
        cli("index", "--data", str(vaswani), "--engine", engine, "--index", token_index, "--workers", "1",
            "--dead-letter", str(work / "token-dead.jsonl"), *admin)
        token_file = secret_file(work, "service.token", secure["service_token"])
        cli("evaluate", "--data", str(vaswani), "--model", "none", "--retriever", engine, "--index", token_index,
            *tls, "--engine-token-file", token_file, "--save-run", str(work / "secure" / "bm25-token.run"))
    return engine, searched, cli, work


def test_secured_commands_equal_the_unsecured_twin(secured_runs):
    engine, searched, _, work = secured_runs
    secure, plain = work / "secure", work / "plain"
    for name in ("bm25.run", "bm25.json", "reranked.run", "reranked.json", "rerank.run", "mined/stats.json"):
        assert (secure / name).read_bytes() == (plain / name).read_bytes(), name
    assert (secure / "bm25.run").stat().st_size > 1_000_000  # 93 queries x 1000 hits
    assert json.loads((secure / "bm25.json").read_text())["first_stage"]["nDCG@10"] > 0.4
    assert searched["secure"] == searched["plain"] and searched["secure"].count("query ") == len(QUERIES)
    assert json.loads((secure / "bm25-url.json").read_text()) == json.loads((secure / "bm25.json").read_text())
    if engine == "elasticsearch":
        assert (secure / "bm25-token.run").read_bytes() == (secure / "bm25.run").read_bytes()


def test_no_secret_in_any_output_or_written_file(secured_runs, credentials):
    _, _, cli, work = secured_runs
    secrets = secrets_of(credentials)
    assert all(len(secret) >= 8 for secret in secrets)
    for command, printed in cli.outputs:
        for secret in secrets:
            assert secret not in printed, f"a secret in the output of: {command}"
    written = [path for path in work.rglob("*") if path.is_file()
               and not path.name.endswith((".password", ".token"))]
    assert len(written) > 10
    for path in written:
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"a secret in {path}"
    # the URL is shown, redacted, where the first stage is described
    assert any("https://reader:***@localhost:" in printed for _, printed in cli.outputs)


def test_errors_a_user_can_act_on_are_one_line(credentials, secured_runs, vaswani, tmp_path):
    """Each failure ends in one line saying what to do, with exit status 1 (the run failed) or 2 (bad input),
    and none shows a secret."""
    engine = secured_runs[0]  # its server has the readers' index
    secure = credentials[engine]
    users = secure["users"]
    cli = Cli(tmp_path)
    host_port = secure["url"].removeprefix("https://localhost")
    reader_file = secret_file(tmp_path, "reader.password", users["reader"])
    wrong_file = secret_file(tmp_path, "wrong.password", "Wr0ng#Pa55w0rd-38")
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    evaluate = ["evaluate", "--data", str(vaswani), "--model", "none", "--retriever", engine, "--index", ALIAS, "-q"]
    reader = ["--user", "reader", "--password-file", reader_file]
    cases = {
        # (flags, exit status, what the line must say)
        "no CA given": (["--url", secure["url"], *reader], 1, ["not trusted", "--ca-certs", "http_ca.crt"]),
        "another CA": (["--url", secure["url"], "--ca-certs", credentials["other_ca"], *reader], 1,
                       ["not trusted", "--ca-certs"]),
        "host name not in the certificate": (["--url", f"https://127.0.0.1{host_port}", "--ca-certs",
                                              credentials["ca_certs"], *reader], 1,
                                             ["not valid for this host name", "127.0.0.1"]),
        "http on the TLS port": (["--url", f"http://localhost{host_port}", *reader], 1, ["use https://"]),
        "https on a plain port": (["--url", require_server(TWINS[engine]).replace("http://", "https://")], 1,
                                  ["does not speak TLS on this port: use http://"]),
        "wrong password": (["--url", secure["url"], "--ca-certs", credentials["ca_certs"], "--user", "reader",
                            "--password-file", wrong_file], 1, ["HTTP 401", "refused the password of user 'reader'"]),
        "no credentials": (["--url", secure["url"], "--ca-certs", credentials["ca_certs"]], 1,
                           ["without credentials", "--user"]),
        "index outside the role": (["--index", "private-vaswani", "--url", secure["url"], "--ca-certs",
                                    credentials["ca_certs"], *reader], 1,
                                   ["HTTP 403", "refused user 'reader' the privilege indices:",
                                    "on private-vaswani"]),
        "missing password file": (["--url", secure["url"], "--user", "reader", "--password-file",
                                   str(tmp_path / "nope")], 2, ["nope: cannot read the password file"]),
        "empty password file": (["--url", secure["url"], "--user", "reader", "--password-file", str(empty)], 2,
                                [f"{empty}: the password file is empty"]),
        "user without password": (["--url", secure["url"], "--user", "reader"], 2,
                                   ["no password for engine user 'reader'", "ESRERANK_ENGINE_PASSWORD"]),
    }
    api_key_file = secret_file(tmp_path, "engine.key", API_KEY)
    token_file = secret_file(tmp_path, "engine.token", TOKEN)
    if engine == "elasticsearch":
        cases["API key refused"] = (["--url", secure["url"], "--ca-certs", credentials["ca_certs"],
                                     "--engine-api-key-file", api_key_file], 1, ["refused the API key"])
    else:
        cases["API key on OpenSearch"] = (["--url", secure["url"], "--engine-api-key-file", api_key_file], 2,
                                          ["OpenSearch has no API keys"])
    cases["token refused"] = (["--url", secure["url"], "--ca-certs", credentials["ca_certs"], "--engine-token-file",
                               token_file], 1, ["refused the bearer token"])
    cases["two ways to authenticate"] = (["--url", secure["url"], *reader, "--engine-token-file", token_file], 2,
                                         ["one way to authenticate"])
    for name, (flags, status, expected) in cases.items():
        done = cli(*evaluate, *flags, expect=status)
        line = error_line(done)
        for fragment in expected:
            assert fragment in line, f"{name}: {line}"
        assert "Traceback" not in done.stderr, name
    # working ways in besides a CA file: a client certificate (with the reader's password), and --insecure, warned
    tls_checked = cli(*evaluate, "--url", secure["url"], "--ca-certs", credentials["ca_certs"], *reader)
    unchecked = cli(*evaluate, "--url", secure["url"], "--insecure", *reader)
    if engine == "opensearch":  # its security plugin takes the certificate's CN (esrerank-client, a reader) as user
        by_certificate = cli(*evaluate, "--url", secure["url"], "--ca-certs", credentials["ca_certs"],
                             "--client-cert", credentials["client_cert"], "--client-key", credentials["client_key"])
        # the measures alike (the header names no user); without the certificate: 401, "no credentials" above
        assert by_certificate.stdout.splitlines()[1:] == tls_checked.stdout.splitlines()[1:]
        assert f"first stage: opensearch {secure['url']}/{ALIAS}" in by_certificate.stdout
    assert "nDCG@10" in tls_checked.stdout and unchecked.stdout == tls_checked.stdout
    assert "--insecure: the certificate of https://reader:***@localhost" in unchecked.stderr
    assert "Unverified HTTPS request" not in unchecked.stderr  # warned once, by esrerank, not for every request
    # the reader may not index or register: one line naming the privilege refused and the command's full list
    indexing = cli("index", "--data", str(vaswani), "--engine", engine, "--index", "sec-reader-index", "--url",
                   secure["url"], "--ca-certs", credentials["ca_certs"], *reader, expect=1)
    assert "refused user 'reader' the privilege" in error_line(indexing)
    assert "indexing needs" in error_line(indexing)
    if engine == "opensearch":
        registering = cli("register", "opensearch", "--service-url", "http://127.0.0.1:9290", "--url", secure["url"],
                          "--ca-certs", credentials["ca_certs"], *reader, "--index", ALIAS, "--name", "sec-denied",
                          expect=1)
        line = error_line(registering)
        assert "refused user 'reader' the privilege cluster:admin/opensearch/ml/" in line
        assert "registering needs" in line
        # a user holding exactly what registering needs (docs/engines.md) registers through TLS
        registrar = secret_file(tmp_path, "registrar.password", users["registrar"])
        registered = cli("register", "opensearch", "--service-url", "http://127.0.0.1:9290", "--url", secure["url"],
                         "--ca-certs", credentials["ca_certs"], "--user", "registrar", "--password-file", registrar,
                         "--index", ALIAS, "--name", "sec-registered")
        assert json.loads(registered.stdout)["pipeline"] == "sec-registered"
    secrets = secrets_of(credentials) + ["Wr0ng#Pa55w0rd-38", API_KEY, TOKEN,
                                         base64.b64encode(API_KEY.encode()).decode()]
    for command, printed in cli.outputs:
        for secret in secrets:
            assert secret not in printed, f"a secret in the output of: {command}"

