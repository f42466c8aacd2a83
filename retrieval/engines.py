"""Elasticsearch and OpenSearch as the first stage: BM25 search and index management.

Both engines speak the same REST API for everything used here (index creation with a BM25 similarity,
``_bulk``, ``_msearch``, ``_mget``, aliases), so there is one implementation, :class:`SearchEngineBM25`,
over a thin REST adapter per client library (``elasticsearch`` and ``opensearch-py``); the two public
classes only pick the adapter.

Analysis. Where the server has Elasticsearch's built-in ``english``/``standard`` analyzer it is used
("native" analysis). Servers without the ``analysis-common`` module (the integ-test distributions on
Maven Central) lack ``english``; there the index stores the terms esrerank's own analyzer produced (an
exact replica of the built-in one, checked against OpenSearch's ``_analyze`` in the tests) in a field
analyzed by ``whitespace``, and queries are analyzed the same way ("client" analysis). Either way the
index's ``_meta`` records which, so a searcher always analyzes queries as the index was built.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from .analysis import get_analyzer
from .errors import EsrerankError
from .records import DataError, Hit

logger = logging.getLogger(__name__)

FIELD = "contents"  # the indexed field: title and text joined, as the in-memory index does
SIMILARITY = "esrerank_bm25"


class EngineError(EsrerankError, RuntimeError):
    """The server answered with an error; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class EngineUnavailable(EngineError):
    """No answer from the server (refused, reset, timed out)."""

    def __init__(self, url: str, cause: str):
        super().__init__(0, f"cannot reach {url}: {_short_cause(cause)}")


def _short_cause(cause: str) -> str:
    # the clients nest urllib3's whole exception chain in the message; its errno text is what matters
    for marker in ("[Errno", "timed out", "Connection refused"):
        if marker in cause:
            start = cause.index(marker)
            return cause[start:].split(")")[0].strip(" '\"")
    return " ".join(cause.split())[:200]


def check_url(url: str) -> str:
    """The URL of a server, refused early unless it is http(s)://host[:port][/path]."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(url, "not a server URL: give http(s)://HOST:PORT, e.g. http://127.0.0.1:9200")
    try:
        parts.port
    except ValueError:
        raise DataError(url, "the port is not a number") from None
    return url


def node_urls(url: str) -> list[str]:
    """The nodes of ``url``: one URL, or several separated by commas (nodes of one cluster)."""
    nodes = [check_url(node.strip()) for node in url.split(",") if node.strip()]
    if not nodes:
        raise DataError(url, "no server URL given")
    return nodes


def _failover(nodes: list[str], sniff: bool) -> dict:
    """Client options shared by both libraries: a request whose node cannot be reached goes to another
    node (connection errors only: 429s are the bulk loader's to retry with backoff, and other statuses
    are answers); with ``sniff`` the client asks the cluster for its other nodes at start and on failure."""
    retries = len(nodes) - 1 if not sniff else max(len(nodes) - 1, 4)
    return {"max_retries": retries, "retry_on_status": (), "retry_on_timeout": False, "sniff_on_start": sniff}


# --- REST adapters ------------------------------------------------------------------------------------

class _ElasticsearchRest:
    engine = "elasticsearch"

    def __init__(self, url: str, request_timeout: float, sniff: bool = False):
        import elasticsearch

        self._errors = elasticsearch
        nodes = node_urls(url)
        self.url = url
        self.client = elasticsearch.Elasticsearch(nodes, request_timeout=request_timeout,
                                                  sniff_on_node_failure=sniff, **_failover(nodes, sniff))

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        headers = {"accept": "application/json"}
        if isinstance(body, str):
            headers["content-type"] = "application/x-ndjson"
        elif body is not None:
            headers["content-type"] = "application/json"
        try:
            return self.client.perform_request(method, path, params=params, headers=headers, body=body).body
        except self._errors.ApiError as exc:
            raise EngineError(exc.meta.status, error_reason(exc.body) or str(exc)) from None
        except (self._errors.ConnectionError, self._errors.ConnectionTimeout) as exc:
            raise EngineUnavailable(self.url, str(exc)) from None


class _OpenSearchRest:
    engine = "opensearch"

    def __init__(self, url: str, request_timeout: float, sniff: bool = False):
        import opensearchpy

        self._errors = opensearchpy
        nodes = node_urls(url)
        self.url = url
        self.client = opensearchpy.OpenSearch(nodes, timeout=request_timeout, sniff_on_connection_fail=sniff,
                                              pool_maxsize=16,  # parallel bulk workers share the client
                                              **_failover(nodes, sniff))

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        headers = {"content-type": "application/x-ndjson"} if isinstance(body, str) else None
        try:
            return self.client.transport.perform_request(method, path, params=params, body=body, headers=headers)
        except self._errors.ConnectionError as exc:
            raise EngineUnavailable(self.url, str(exc)) from None
        except self._errors.TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            raise EngineError(status, error_reason(exc.info) or str(exc)) from None


def error_reason(body: Any) -> str:
    """The reason an engine gives in an error answer, or in one item of a ``_bulk`` answer."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('type')}: {error.get('reason')}"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    if isinstance(body, str) and body.lstrip().startswith("<"):
        return "the answer is HTML, not JSON: is this URL an Elasticsearch/OpenSearch server?"
    return " ".join(str(body).split())[:500] if body else ""


def ndjson(lines: Iterable[dict]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


# --- index settings ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexConfig:
    """How an index is built. Recorded in the index's ``_meta`` so searchers and resumed loads agree.

    k1, b: BM25 parameters (defaults 0.9 / 0.4, Anserini's MS MARCO setting).
    analyzer: ``english`` or ``standard`` (Elasticsearch's names).
    analysis: ``native`` (the server's analyzer) or ``client`` (esrerank's replica, pre-analyzed terms);
        ``auto`` picks native where the server has the analyzer.
    shards, replicas: the index's final layout; loads run with zero replicas and add them at the end.
    """

    k1: float = 0.9
    b: float = 0.4
    analyzer: str = "english"
    analysis: str = "auto"
    shards: int = 1
    replicas: int = 0


IndexSettings = IndexConfig  # the earlier name; kept for scripts that import it


class SearchEngineBM25:
    """BM25 over an Elasticsearch/OpenSearch index (or alias), with the in-memory index's interface.

    Args:
        url: the server, e.g. ``http://127.0.0.1:9200``.
        index: index or alias name.
        msearch_batch: queries per ``_msearch`` request. Default 64: large enough to amortize the
            round trip, small enough to keep responses of 1,000 hits each moderate.
        request_timeout: seconds per request. Default 120 (bulk loads and force merges are slow).
        search_pipeline: an OpenSearch search pipeline every search goes through (e.g. one that reranks
            the hits inside the engine, made by ``esrerank register opensearch``); the query text goes
            with it in ``ext.rerank.query_context``. Default None.
        dfs: search with ``dfs_query_then_fetch``: every shard first reports its term statistics, so
            BM25 scores use the whole index's document counts and lengths, as one shard would. Default
            None: on when the index (or the indices behind the alias) has more than one primary shard,
            where plain ``query_then_fetch`` scores each shard with its own statistics and the ranking is
            no longer exact BM25; False trades that for one round trip less per search.
        sniff: ask the cluster for its nodes at start (and again when one fails) and spread requests
            over them. Default False: a server in a container often publishes addresses the client cannot
            reach. Several nodes can also be given in ``url``, separated by commas; either way a request
            whose node cannot be reached is sent to another.
    """

    engine = "engine"
    _adapter = None

    def __init__(self, url: str = "http://127.0.0.1:9200", index: str = "esrerank", msearch_batch: int = 64,
                 request_timeout: float = 120.0, search_pipeline: str | None = None, dfs: bool | None = None,
                 sniff: bool = False):
        if search_pipeline is not None and self.engine != "opensearch":
            raise ValueError("search pipelines are OpenSearch's; Elasticsearch reranks through a retriever")
        self.url = url
        self.index = index
        self.msearch_batch = msearch_batch
        self.search_pipeline = search_pipeline
        self.rest = self._adapter(url, request_timeout, sniff)
        self._meta: dict | None = None
        self._dfs = dfs

    @property
    def dfs(self) -> bool:
        """Whether searches use ``dfs_query_then_fetch`` (see the class docstring), decided on first use."""
        if self._dfs is None:
            shards = self.primary_shards(self.index)
            self._dfs = shards > 1
            if self._dfs:
                logger.info("%s has %d primary shards: searching with dfs_query_then_fetch (global term "
                            "statistics, exact BM25); dfs=False skips it", self.index, shards)
        return self._dfs

    def primary_shards(self, name: str) -> int:
        """Primary shards of an index, or of all the indices an alias points to."""
        settings = self.rest.request("GET", f"/{name}/_settings",
                                     params={"filter_path": "*.settings.index.number_of_shards"})
        return sum(int(entry["settings"]["index"]["number_of_shards"]) for entry in settings.values())

    # --- reading the index's recorded settings --------------------------------------------------

    @property
    def meta(self) -> dict:
        """The esrerank ``_meta`` of the index (analysis mode, analyzer, k1, b); {} for a foreign index."""
        if self._meta is None:
            self._meta = self.index_meta(self.index)
        return self._meta

    def _query_text(self, query: str) -> str:
        if self.meta.get("analysis") == "client":
            return " ".join(get_analyzer(self.meta["analyzer"])(query))
        return query

    # --- searching ------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Top ``k`` per query with ``_msearch`` in batches of ``msearch_batch``; no ``_source``, no
        total-hit counting."""
        if isinstance(queries, str):
            raise TypeError("search_many takes a list of query strings; use search() for one query")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        for number, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise ValueError(f"query {number} is empty or not a string: {query!r}")
        if self.search_pipeline:
            return self._search_through_pipeline(queries, k)
        results: list[list[Hit]] = []
        for start in range(0, len(queries), self.msearch_batch):
            batch = queries[start:start + self.msearch_batch]
            lines = []
            for query in batch:
                lines.append({})
                lines.append(self._query_body(query, k))
            results.extend(self._complete_msearch(ndjson(lines)))
        return results

    def _complete_msearch(self, body: str, attempts: int = 4) -> list[list[Hit]]:
        """One ``_msearch``, asked again (up to ``attempts`` times, 0.5 s, 1 s, 2 s apart) while any of its
        searches misses shards or fails on the server's side (5xx): a node that just died leaves shards
        unanswered until the cluster has promoted their replicas, and partial hits must never pass for
        the top k. Other errors (a bad query: 4xx) are raised at once."""
        for attempt in range(attempts):
            response = self.rest.request("POST", f"/{self.index}/_msearch", body=body, params=self._search_params())
            items = response["responses"]
            for item in items:
                if "error" in item and item.get("status", 500) < 500:
                    raise EngineError(item["status"], error_reason(item))
            failed = [item for item in items if "error" in item or item.get("_shards", {}).get("failed")]
            if not failed:
                return [self._hits(item) for item in items]
            problem = (f"HTTP {failed[0].get('status')}: {error_reason(failed[0])}" if "error" in failed[0] else
                       f"{failed[0]['_shards']['failed']} of {failed[0]['_shards']['total']} shards failed")
            if attempt + 1 < attempts:
                logger.warning("%d of %d searches failed or missed shards (%s); asking again", len(failed),
                               len(items), problem)
                time.sleep(0.5 * 2**attempt)
        raise EngineError(503, f"searches still failing after {attempts} attempts ({problem}): partial results "
                               "refused")

    def _search_through_pipeline(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        # _msearch takes no search_pipeline (OpenSearch 2.19: neither as a parameter nor in its header
        # lines), so each query is its own _search, a few in flight at once: the engine waits on the
        # reranking service, and the service batches concurrent requests together.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.pipeline_concurrency) as pool:
            return list(pool.map(lambda query: self.search_one_request(query, k), queries))

    pipeline_concurrency = 4

    def search_one_request(self, query: str, k: int = 10) -> list[Hit]:
        """One ``_search`` request (the per-query baseline the benchmark compares ``_msearch`` with)."""
        response = self.rest.request("POST", f"/{self.index}/_search", body=self._query_body(query, k),
                                     params=self._search_params())
        if response.get("_shards", {}).get("failed"):
            shards = response["_shards"]
            raise EngineError(503, f"{shards['failed']} of {shards['total']} shards failed: partial results refused")
        return self._hits(response)

    def _search_params(self) -> dict | None:
        params = {"search_pipeline": self.search_pipeline} if self.search_pipeline else {}
        if self.dfs:
            params["search_type"] = "dfs_query_then_fetch"
        return params or None

    score_scale = 1.0

    def _hits(self, response: dict) -> list[Hit]:
        scale = self.score_scale
        return [Hit(h["_id"], float(h["_score"]) * scale, rank)
                for rank, h in enumerate(response["hits"]["hits"], start=1)]

    def _query_body(self, query: str, k: int) -> dict:
        body = {"query": {"match": {FIELD: {"query": self._query_text(query)}}}, "size": k,
                "_source": False, "track_total_hits": False}
        if self.search_pipeline:
            # the reranker reads the documents' fields from _source and the query as the user wrote it
            body["_source"] = True
            body["track_total_hits"] = True  # the rerank processor reads the total (2.19.1: NPE without it)
            body["ext"] = {"rerank": {"query_context": {"query_text": query}}}
        return body

    def fetch_texts(self, doc_ids: Sequence[str]) -> list[str]:
        """Title and text of each document (joined as the index field is), for the reranker."""
        texts = {}
        for start in range(0, len(doc_ids), 1000):
            chunk = list(dict.fromkeys(doc_ids[start:start + 1000]))
            response = self.rest.request("POST", f"/{self.index}/_mget", body={"ids": chunk},
                                         params={"_source_includes": "title,text"})
            for doc in response["docs"]:
                if doc.get("found"):
                    source = doc["_source"]
                    title, text = source.get("title") or "", source.get("text") or ""
                    texts[doc["_id"]] = f"{title} {text}" if title else text
        missing = [d for d in doc_ids if d not in texts]
        if missing:
            raise KeyError(f"{len(missing)} doc ids are not in index {self.index!r} (e.g. {missing[0]!r})")
        return [texts[d] for d in doc_ids]

    def count(self, name: str | None = None) -> int:
        """Documents in ``name`` (default: this searcher's index), after a refresh."""
        name = name or self.index
        self.refresh(name)
        return int(self.rest.request("GET", f"/{name}/_count")["count"])

    # --- analysis and index management -----------------------------------------------------------

    def has_analyzer(self, analyzer: str) -> bool:
        try:
            self.rest.request("POST", "/_analyze", body={"analyzer": analyzer, "text": "probe"})
            return True
        except EngineError as exc:
            if exc.status == 400:
                return False
            raise

    def server_analyze(self, text: str, analyzer: str) -> list[str]:
        response = self.rest.request("POST", "/_analyze", body={"analyzer": analyzer, "text": text})
        return [token["token"] for token in response["tokens"]]

    def resolve_analysis(self, settings: IndexConfig) -> IndexConfig:
        """Settle ``analysis="auto"``: native where the server has the analyzer, else client."""
        get_analyzer(settings.analyzer)  # unknown names fail here, before anything is created
        if settings.analysis in ("native", "client"):
            if settings.analysis == "native" and not self.has_analyzer(settings.analyzer):
                raise EngineError(400, f"{self.engine} at {self.url} has no {settings.analyzer!r} analyzer "
                                       "(no analysis-common module); use analysis 'client' or 'auto'")
            return settings
        native = self.has_analyzer(settings.analyzer)
        if not native:
            logger.info("%s at %s has no %r analyzer: indexing esrerank's replica of it (pre-analyzed terms)",
                        self.engine, self.url, settings.analyzer)
        return IndexConfig(**{**asdict(settings), "analysis": "native" if native else "client"})

    def index_body(self, settings: IndexConfig, meta: dict) -> dict:
        analyzer = settings.analyzer if settings.analysis == "native" else "whitespace"
        return {
            "settings": {
                "number_of_shards": settings.shards,
                "number_of_replicas": 0,  # replicas are added after the load
                "refresh_interval": "-1",  # no refreshes during the load; restored after
                "similarity": {SIMILARITY: {"type": "BM25", "k1": settings.k1, "b": settings.b}},
            },
            "mappings": {
                "dynamic": "strict",
                "_meta": {"esrerank": meta},
                "_source": {"excludes": [FIELD]},  # title and text are kept; the joined field is derived
                "properties": {
                    FIELD: {"type": "text", "analyzer": analyzer, "similarity": SIMILARITY},
                    "title": {"type": "text", "index": False},
                    "text": {"type": "text", "index": False},
                },
            },
        }

    def exists(self, name: str) -> bool:
        try:
            self.rest.request("GET", f"/{name}/_settings")  # HEAD answers 404 without raising in one client
            return True
        except EngineError as exc:
            if exc.status == 404:
                return False
            raise

    def alias_targets(self, alias: str) -> list[str]:
        try:
            return sorted(self.rest.request("GET", f"/_alias/{alias}"))
        except EngineError as exc:
            if exc.status == 404:
                return []
            raise

    def index_meta(self, name: str) -> dict:
        """The esrerank ``_meta`` of an index or of the one index behind an alias; {} for a foreign index."""
        mapping = self.rest.request("GET", f"/{name}/_mapping")
        return next(iter(mapping.values()))["mappings"].get("_meta", {}).get("esrerank", {})

    def put_meta(self, name: str, meta: dict) -> None:
        self.rest.request("PUT", f"/{name}/_mapping", body={"_meta": {"esrerank": meta}})

    # --- loading an index (used by retrieval.indexing) ---------------------------------------------

    def create_index(self, name: str, settings: IndexConfig, meta: dict) -> None:
        self.rest.request("PUT", f"/{name}", body=self.index_body(settings, meta))

    def bulk(self, body: str) -> dict:
        """One ``_bulk`` request (NDJSON body); the answer has one item per action."""
        return self.rest.request("POST", "/_bulk", body=body)

    def refresh(self, name: str) -> None:
        self.rest.request("POST", f"/{name}/_refresh")

    def open_for_search(self, name: str, replicas: int, force_merge: bool) -> None:
        """After a load: refreshes back on, the replicas added, and optionally one segment."""
        self.rest.request("PUT", f"/{name}/_settings",
                          body={"index": {"refresh_interval": None, "number_of_replicas": replicas}})
        self.refresh(name)
        if force_merge:
            self.force_merge(name)

    def force_merge(self, name: str, poll_s: float = 5.0) -> None:
        """Merge ``name`` to one segment, as a server task that is polled: merging millions of documents
        takes longer than any one request may wait (8.8M MS MARCO passages: minutes)."""
        started = self.rest.request("POST", f"/{name}/_forcemerge",
                                    params={"max_num_segments": "1", "wait_for_completion": "false"})
        task = started.get("task") if isinstance(started, dict) else None
        if task is None:  # a server that ran the merge within the request
            return
        while True:
            try:
                status = self.rest.request("GET", f"/_tasks/{task}")
            except EngineError as exc:
                # When the merge ends the server stores its result in the .tasks index. Where that index
                # cannot be allocated (seen here with Elasticsearch: disk above a watermark while the
                # merge doubled the index), the task cannot be read: the index's own segments tell.
                if exc.status not in (404, 503):
                    raise
                if self._merged(name):
                    return
                status = {}
            if status.get("completed"):
                if status.get("error"):
                    raise EngineError(500, f"force merge of {name} failed: {error_reason(status)}")
                return
            logger.info("waiting for the force merge of %s (task %s)", name, task)
            time.sleep(poll_s)

    def _merged(self, name: str) -> bool:
        """No merge running and at most one segment per shard."""
        stats = self.rest.request("GET", f"/{name}/_stats/merge,segments")["_all"]["primaries"]
        shards = self.primary_shards(name)
        return stats["merges"]["current"] == 0 and stats["segments"]["count"] <= shards

    def point_alias(self, alias: str, index: str) -> list[str]:
        """Point ``alias`` at ``index`` alone, atomically; returns the indices it pointed to before."""
        old = [name for name in self.alias_targets(alias) if name != index]
        actions = [{"remove": {"index": name, "alias": alias}} for name in old]
        actions.append({"add": {"index": index, "alias": alias}})
        self.rest.request("POST", "/_aliases", body={"actions": actions})
        return old

    def delete_index(self, name: str) -> None:
        self.rest.request("DELETE", f"/{name}")

    def list_indices(self, pattern: str) -> list[str]:
        response = self.rest.request("GET", f"/_cat/indices/{pattern}", params={"format": "json", "h": "index"})
        return sorted(row["index"] for row in response)


class ElasticsearchBM25(SearchEngineBM25):
    """BM25 search over an Elasticsearch index (client: ``elasticsearch``)."""

    engine = "elasticsearch"
    _adapter = _ElasticsearchRest

    @property
    def score_scale(self) -> float:
        # Elasticsearch's "BM25" similarity is Lucene's LegacyBM25Similarity, which multiplies every
        # score by (k1 + 1) for compatibility with old versions. Dividing it out gives Lucene's (and
        # OpenSearch's, and the in-memory index's) scores; the ranking is the same either way.
        k1 = self.meta.get("k1")
        return 1.0 / (k1 + 1.0) if k1 is not None else 1.0


class OpenSearchBM25(SearchEngineBM25):
    """BM25 search over an OpenSearch index (client: ``opensearch-py``, the ``opensearch`` extra)."""

    engine = "opensearch"
    _adapter = _OpenSearchRest


ENGINES = {"elasticsearch": ElasticsearchBM25, "opensearch": OpenSearchBM25}
_ADAPTERS = {"elasticsearch": _ElasticsearchRest, "opensearch": _OpenSearchRest}


def rest_client(engine: str, url: str, request_timeout: float = 120.0):
    """The engine's REST adapter alone: ``request(method, path, body=None, params=None)`` returning the
    parsed answer and raising :class:`EngineError` (for cluster-level APIs: ML Commons, pipelines)."""
    try:
        return _ADAPTERS[engine](url, request_timeout)
    except KeyError:
        raise ValueError(f"unknown engine {engine!r}; choose one of {sorted(_ADAPTERS)}") from None


def connect(engine: str, url: str, index: str, **kwargs) -> SearchEngineBM25:
    try:
        return ENGINES[engine](url, index, **kwargs)
    except KeyError:
        raise ValueError(f"unknown engine {engine!r}; choose one of {sorted(ENGINES)}") from None
