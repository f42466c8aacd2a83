"""How esrerank reaches an Elasticsearch or OpenSearch cluster: its URL, TLS, and credentials, in one setting.

:class:`EngineConnection` is what every searcher, indexer and registration takes (a plain URL string is
accepted too and means an unsecured cluster). It is handed to the official clients' own options
(``ssl_context``, ``basic_auth``/``http_auth``, ``bearer_auth``, ``api_key``); esrerank writes no TLS or
authentication code of its own.

Secrets never leave it: its ``repr`` and :attr:`EngineConnection.shown_url` show the user name and
``***``, and :meth:`EngineConnection.scrub` takes every secret out of a text (an error message from a
client library) before esrerank shows or logs it.
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote

from esrerank_errors import DataError, InputError

logger = logging.getLogger(__name__)

HIDDEN = "***"


@dataclass(frozen=True)
class EngineConnection:
    """One cluster and how to authenticate to it.

    Args:
        url: the cluster, ``http(s)://HOST:PORT``; several nodes of one cluster separated by commas.
            Default ``http://127.0.0.1:9200`` (a local Elasticsearch). Credentials in it
            (``https://user:password@host``) are taken out into ``username``/``password`` by
            :meth:`from_url`.
        ca_certs: a PEM file of the certificate authorities that sign the cluster's certificate:
            Elasticsearch's ``config/certs/http_ca.crt``, OpenSearch's ``root-ca.pem``. Default None: the
            system's trust store (as ``curl`` uses, ``$SSL_CERT_FILE`` included) and certifi's bundle.
        client_cert, client_key: PEM files of a client certificate and its key, for clusters that ask for
            one. Default None.
        verify_certs: check the cluster's certificate and host name. Default True; False (``--insecure``)
            accepts any certificate and is warned about on every connection.
        username, password: HTTP basic authentication (a file-realm or native user of Elasticsearch, an
            internal user of OpenSearch's security plugin). Default None.
        bearer_token: an ``Authorization: Bearer`` token (an Elasticsearch service-account token or
            OAuth2 token; a JWT for OpenSearch). Default None.
        api_key: an Elasticsearch API key, ``id:key`` or the encoded form Elasticsearch returns. Default None.

    At most one of the three ways to authenticate may be given.
    """

    url: str = "http://127.0.0.1:9200"
    ca_certs: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify_certs: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self):
        nodes = split_nodes(self.url)
        if any(_split_userinfo(node)[1] is not None for node in nodes):
            raise InputError("the engine URL holds credentials: use EngineConnection.from_url(url), or give "
                             "username and password")
        schemes = {node.partition("://")[0].lower() for node in nodes if "://" in node}
        if len(schemes) > 1:
            raise InputError("the nodes of the engine URL mix http:// and https://: a cluster speaks one")
        ways = [name for name, value in (("a user and password", self.username or self.password),
                                         ("a bearer token", self.bearer_token), ("an API key", self.api_key))
                if value]
        if len(ways) > 1:
            raise InputError(f"give one way to authenticate to the engine, not {' and '.join(ways)}")
        if self.password and not self.username:
            raise InputError("an engine password needs a user name (--user NAME)")
        if self.username and not self.password:
            raise InputError(f"no password for engine user {self.username!r}: give --password-file FILE or set "
                             "$ESRERANK_ENGINE_PASSWORD")
        if bool(self.client_cert) != bool(self.client_key):
            raise InputError("a client certificate needs both --client-cert FILE and --client-key FILE")
        for flag, path in (("--ca-certs", self.ca_certs), ("--client-cert", self.client_cert),
                           ("--client-key", self.client_key)):
            if path is not None:
                _readable_file(path, flag)

    @classmethod
    def from_url(cls, url: str, **options) -> "EngineConnection":
        """A connection to ``url``; a ``user:password@`` in it becomes ``username``/``password``
        (percent-encoded characters decoded: write ``%`` as ``%25`` and ``/`` as ``%2F``; a ``#``, ``?``, ``@``
        or ``,`` may stay as it is), with a warning: a command line is visible to the machine's other users."""
        nodes, credentials = [], set()
        for node in split_nodes(url):
            plain, userinfo = _split_userinfo(node)
            nodes.append(plain)
            if userinfo is not None:
                credentials.add(userinfo)
        if len(credentials) > 1:
            raise InputError("the nodes of --url carry different credentials: give one user for the cluster")
        if credentials:
            user, _, password = credentials.pop().partition(":")
            if options.get("username") or options.get("password"):
                raise InputError("credentials given both in the URL and as --user/--password-file: give one")
            logger.warning("the engine password is in the URL, where other users of this machine can read it "
                           "(ps, shell history): prefer --user NAME with --password-file FILE or "
                           "$ESRERANK_ENGINE_PASSWORD")
            options.update(username=unquote(user), password=unquote(password) or None)
        return cls(",".join(nodes), **options)

    # --- what may be shown ---------------------------------------------------------------------------

    @property
    def shown_url(self) -> str:
        """The URL as esrerank shows it: the user name, if any, and ``***`` for any secret."""
        if not (self.username or self.bearer_token or self.api_key):
            return self.url
        who = f"{self.username}:{HIDDEN}" if self.username else HIDDEN
        shown = []
        for node in split_nodes(self.url):
            scheme, _, rest = node.partition("://")
            shown.append(f"{scheme}://{who}@{rest}")
        return ",".join(shown)

    @property
    def secure(self) -> bool:
        return any(node.lower().startswith("https://") for node in split_nodes(self.url))

    def secrets(self) -> list[str]:
        """Every secret this connection holds, in the forms a library might echo: as given, and as an
        ``Authorization`` header carries it."""
        found = []
        if self.password:
            found += [self.password, base64.b64encode(f"{self.username}:{self.password}".encode()).decode()]
        if self.bearer_token:
            found.append(self.bearer_token)
        if self.api_key:
            found += [self.api_key, base64.b64encode(self.api_key.encode()).decode()]
        return [secret for secret in found if secret]

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` (for messages of the client libraries)."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, HIDDEN)
        return text

    def __repr__(self) -> str:
        parts = [f"url={self.shown_url!r}"]
        parts += [f"{name}={value!r}" for name, value in (("ca_certs", self.ca_certs),
                                                           ("client_cert", self.client_cert),
                                                           ("client_key", self.client_key)) if value]
        if not self.verify_certs:
            parts.append("verify_certs=False")
        if self.bearer_token:
            parts.append(f"bearer_token={HIDDEN!r}")
        if self.api_key:
            parts.append(f"api_key={HIDDEN!r}")
        return f"EngineConnection({', '.join(parts)})"

    # --- what the client libraries are given --------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings for https nodes (None for plain http): the standard library's default context
        with the CA file (else the system's trust store and certifi's bundle), the client certificate, and
        verification off only when asked."""
        if not self.secure:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_certs)
            if self.ca_certs is None:
                try:  # certifi's bundle too: what the clients trust by default, where the system has no store
                    import certifi

                    context.load_verify_locations(certifi.where())
                except ImportError:
                    pass
        except ssl.SSLError as exc:
            raise DataError(self.ca_certs, f"not a PEM file of CA certificates ({exc.reason or exc})") from None
        if self.client_cert:
            try:
                context.load_cert_chain(self.client_cert, self.client_key)
            except ssl.SSLError as exc:
                raise DataError(self.client_cert, "the client certificate and --client-key do not load as a PEM "
                                                  f"certificate and its key ({exc.reason or exc})") from None
        if not self.verify_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def client_options(self, engine: str) -> dict:
        """Keyword arguments for ``elasticsearch.Elasticsearch`` or ``opensearchpy.OpenSearch``: the clients'
        own TLS options when any is given (``ca_certs`` then trusts that CA alone), else a context with the
        system's trust store; the credentials."""
        options: dict = {}
        if self.secure and (self.ca_certs or self.client_cert or not self.verify_certs):
            self.ssl_context()  # the files are checked here: a bad one is one line naming it
            options.update(ca_certs=self.ca_certs, client_cert=self.client_cert, client_key=self.client_key,
                           verify_certs=self.verify_certs, ssl_show_warn=False)
            options = {key: value for key, value in options.items() if value is not None}
        elif self.secure:
            options["ssl_context"] = self.ssl_context()
        if not self.verify_certs and self.secure:
            logger.warning("--insecure: the certificate of %s is not checked; anyone between here and the cluster "
                           "can read and change what is sent, credentials included", self.shown_url)
        if engine == "elasticsearch":
            if self.username:
                options["basic_auth"] = (self.username, self.password)
            elif self.bearer_token:
                options["bearer_auth"] = self.bearer_token
            elif self.api_key:
                options["api_key"] = tuple(self.api_key.split(":", 1)) if ":" in self.api_key else self.api_key
        else:
            if self.username:
                options["http_auth"] = (self.username, self.password)
            elif self.bearer_token:
                # opensearch-py has no bearer option; its own headers option carries the header
                options["headers"] = {"authorization": f"Bearer {self.bearer_token}"}
            elif self.api_key:
                raise InputError("OpenSearch has no API keys: give --user with --password-file, or a bearer "
                                 "token (--engine-token-file)")
        return options

def as_connection(connection: "EngineConnection | str") -> EngineConnection:
    """An :class:`EngineConnection` from what a caller gave: one, or a URL string."""
    if isinstance(connection, EngineConnection):
        return connection
    if isinstance(connection, str):
        return EngineConnection.from_url(connection)
    raise TypeError(f"expected an EngineConnection or a URL string, got {type(connection).__name__}")


def read_secret_file(path: str, what: str) -> str:
    """A secret kept in a file: its first line, stripped. An empty or unreadable file is an error naming
    the file, never showing its content."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as exc:
        raise DataError(path, f"cannot read the {what} file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(path, f"the {what} file is not UTF-8 text") from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise DataError(path, f"the {what} file is empty")
    return secret


def split_nodes(url: str) -> list[str]:
    """The nodes of a comma-separated URL. A comma splits only where a scheme follows, so a password may hold
    one (``https://u:p,w@h1:9200,https://u:p,w@h2:9200``)."""
    return [node.strip() for node in re.split(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)", url) if node.strip()]


def _split_userinfo(node: str) -> tuple[str, str | None]:
    """``(url without credentials, "user:password" or None)``. The credentials end at the last ``@`` before
    the path, so a password may hold ``#``, ``?`` or ``@`` unencoded (``urlsplit`` would cut it at the first
    two); a ``/`` in it must be written ``%2F`` (an ``@`` after a ``/`` is the path's)."""
    scheme, separator, rest = node.partition("://")
    at = rest.rfind("@")
    if not separator or at == -1 or "/" in rest[:at]:
        return node, None
    return f"{scheme}://{rest[at + 1:]}", rest[:at]


def redact_text(url: str) -> str:
    """A URL as typed, for an error about it: whatever stands before an ``@`` (credentials) as ``***``."""
    shown = []
    for node in split_nodes(url) or [url]:
        if "@" in node:
            scheme, separator, rest = node.partition("://")
            node = f"{scheme}://***@{rest.rpartition('@')[2]}" if separator else f"***@{node.rpartition('@')[2]}"
        shown.append(node)
    return ",".join(shown)


def _readable_file(path: str, flag: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise DataError(path, f"{flag}: cannot read it: {exc.strerror}") from None
