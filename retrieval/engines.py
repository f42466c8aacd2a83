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

import fnmatch
import json
import logging
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Iterable, Sequence

from .analysis import get_analyzer
from .engine_query import EngineQuery
from .errors import EsrerankError
from .records import DataError, Hit
from .source_fields import (
    MappedField,
    check_fields,
    join_fields,
    mapped_fields,
    read_path,
    source_path,
    text_fields,
)

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


def read_id(hit: dict, id_field: str) -> list[str]:
    """The values of ``id_field`` in a hit: from its ``_source``, or from its stored ``fields``."""
    if "_source" in hit:
        return read_path(hit["_source"], id_field)
    return [str(value) for value in hit.get("fields", {}).get(id_field, [])]


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

    An index built by ``esrerank index`` is searched on its ``contents`` field and read from its ``title``
    and ``text``. Any other index is searched with the user's own query (``query``) and read from the
    fields the user names (``rerank_fields``, else the rule of :meth:`reranked_fields`).

    Args:
        url: the server, e.g. ``http://127.0.0.1:9200``.
        index: index or alias name.
        query: the first stage as the user runs it: fields for a ``multi_match``, a query template or a
            stored search template (:class:`retrieval.engine_query.EngineQuery`, made from the command
            line's options by ``query_from_options``). Default None: esrerank's own ``match`` on
            ``contents`` (an index esrerank built; any other index must name its query).
        rerank_fields: the ``_source`` fields whose text the reranker reads, joined in this order (dotted
            paths through objects and nested fields allowed). Default None: see :meth:`reranked_fields`.
        id_field: a ``_source`` field holding the documents' ids (as the user's qrels name them), instead
            of ``_id``. It must be searchable by exact value (``keyword``, a number, or a ``text`` field
            with a ``keyword`` sub-field). Default None: ``_id``.
        max_text_chars: the longest text read for one document; longer ones are cut (and counted in the
            log). Default 20,000 characters: a 512-token pair reads about 2,500 characters of English, and
            MaxP windows rarely need more than a few pages; the cap keeps a document that holds a whole
            book from filling memory.
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
                 sniff: bool = False, query: EngineQuery | None = None, rerank_fields: Sequence[str] | None = None,
                 id_field: str | None = None, max_text_chars: int = 20_000):
        if search_pipeline is not None and self.engine != "opensearch":
            raise ValueError("search pipelines are OpenSearch's; Elasticsearch reranks through a retriever")
        self.url = url
        self.index = index
        self.msearch_batch = msearch_batch
        self.search_pipeline = search_pipeline
        self.query = query
        self.rerank_fields = list(rerank_fields) if rerank_fields else None
        self.id_field = id_field
        self.max_text_chars = max_text_chars
        self.rest = self._adapter(url, request_timeout, sniff)
        self._dfs = dfs
        self._checked = False
        self._search_logged = False

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

    @cached_property
    def meta(self) -> dict:
        """The esrerank ``_meta`` of the index (analysis mode, analyzer, k1, b); {} for a foreign index."""
        return self.mapping.get("_meta", {}).get("esrerank", {})

    def _query_text(self, query: str) -> str:
        if self.meta.get("analysis") == "client":
            return " ".join(get_analyzer(self.meta["analyzer"])(query))
        return query

    # --- the index's mapping, and checking the user's options against it ---------------------------

    @cached_property
    def mapping(self) -> dict:
        """The index's ``mappings`` (of the first index behind an alias), read once."""
        return self.mappings_of(self.index)

    @cached_property
    def fields(self) -> dict[str, MappedField]:
        """The index's fields by dotted path."""
        return mapped_fields(self.mapping)

    @property
    def source_enabled(self) -> bool:
        return self.mapping.get("_source", {}).get("enabled", True)

    def reranked_fields(self) -> list[str]:
        """The ``_source`` fields the reranker reads, in order: ``rerank_fields`` when given; for an index
        esrerank built, ``title`` and ``text``; with ``query`` fields, the fields searched (boosts dropped,
        a multi-field read from its parent, a wildcard from the text fields it matches); else every
        ``text`` field of the mapping, title-like names (title, headline, subject, heading) first,
        then by name."""
        if self.rerank_fields:
            return self.rerank_fields
        if self.meta:
            return ["title", "text"]
        fields = self.fields
        chosen: list[str] = []
        if self.query is not None and self.query.fields:
            for name in self.query.field_names:
                matches = ([path for path in text_fields(fields) if fnmatch.fnmatchcase(path, name)] if "*" in name
                           else [source_path(name, fields)])
                chosen.extend(path for path in matches if path not in chosen)
            return chosen
        return text_fields(fields)

    def check(self) -> None:
        """Check the options against the index once, before the first search: the index exists, named
        fields are in its mapping, a query is named for an index esrerank did not build, the query
        template is accepted by the engine, the documents' text can be read. Each problem is a
        :class:`DataError` naming what the index has."""
        if self._checked:
            return
        if not self.exists(self.index):
            raise DataError("--index", f"{self.engine} at {self.url} has no index or alias {self.index!r}")
        fields = self.fields
        if self.query is not None and self.query.fields:
            check_fields(self.query.field_names, fields, self.index, "--fields")
        if self.rerank_fields:
            check_fields(self.rerank_fields, fields, self.index, "--rerank-fields")
        elif not self.reranked_fields():
            raise DataError("--rerank-fields", f"index {self.index!r} has no text field to rerank: name the _source "
                                               "fields that hold the text with --rerank-fields")
        if self.id_field:
            check_fields([self.id_field], fields, self.index, "--id-field")
            self._id_lookup_field()
        if not self.source_enabled:
            unstored = [f for f in self.reranked_fields() + ([self.id_field] if self.id_field else [])
                        if not fields.get(f, MappedField(f, "")).stored]
            if unstored:
                raise DataError("--index", f"index {self.index!r} has _source disabled and {', '.join(unstored)} "
                                           "not stored: the reranker cannot read the documents' text; map the "
                                           "fields with \"store\": true or enable _source")
        if self.query is not None and (self.query.template is not None or self.query.template_id is not None):
            self._check_template()
        self._checked = True

    def check_search(self) -> None:
        """:meth:`check`, and that there is a query to search with: esrerank's own on an index it built, else
        the one the user names."""
        self.check()
        if self.query is None and not self.meta and FIELD not in self.fields:
            fields = self.fields
            suggestion = ",".join(text_fields(fields)[:2]) or "FIELD"
            raise DataError("--index", f"{self.index!r} was not built by 'esrerank index': name how to search it "
                                       f"with --fields (e.g. --fields {suggestion}) or --query-template FILE; "
                                       f"its text fields: {', '.join(text_fields(fields)) or 'none'}")
        if not self._search_logged:
            self._search_logged = True
            logger.info("%s/%s: first stage %s; reranker reads %s; ids from %s", self.url, self.index,
                        self.query.describe() if self.query else f"match on {FIELD}",
                        ", ".join(self.reranked_fields()), self.id_field or "_id")

    def _check_template(self) -> None:
        """A stored template must exist and set ``size`` from ``{{size}}``; either template must be one the
        engine accepts (one search is run with a probe text)."""
        where = (self.query.source if self.query.template is not None
                 else f"stored search template {self.query.template_id!r}")
        if self.query.template_id is not None:
            try:
                rendered = self.rest.request("POST", "/_render/template",
                                             body=self.query.template_params("probe", 7))["template_output"]
            except EngineError as exc:
                raise DataError("--query-template", f"{self.query.template_id!r} is neither a file nor a "
                                                    f"search template {self.engine} can render: {exc}") from None
            if str(rendered.get("size")) != "7":
                raise DataError("--query-template", f"{where} does not take its size from the parameter "
                                                    "{{size}}: esrerank asks for k hits; write \"size\": \"{{size}}\"")
        try:
            self._complete_msearch(self._msearch_body(["probe"], 1))
        except EngineError as exc:
            if exc.status >= 500:
                raise
            raise DataError(where, f"{self.engine} rejects the query: {exc}") from None

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
        self.check_search()
        if self.search_pipeline:
            return self._search_through_pipeline(queries, k)
        results: list[list[Hit]] = []
        for start in range(0, len(queries), self.msearch_batch):
            results.extend(self._complete_msearch(self._msearch_body(queries[start:start + self.msearch_batch], k)))
        if len(queries) > 1 and not any(results):
            raise DataError("--index", f"none of the {len(queries)} queries found a document in {self.index!r} "
                                       f"with {self.query.describe() if self.query else f'a match on {FIELD}'}: "
                                       f"check the fields or the template; the index's text fields: "
                                       f"{', '.join(text_fields(self.fields)) or 'none'}")
        return results

    def _msearch_body(self, queries: Sequence[str], k: int) -> str:
        lines = []
        for query in queries:
            lines.append({})
            lines.append(self.query.template_params(query, k) if self._stored_template else self._query_body(query, k))
        return ndjson(lines)

    @property
    def _stored_template(self) -> bool:
        return self.query is not None and self.query.template_id is not None

    def _complete_msearch(self, body: str, attempts: int = 4) -> list[list[Hit]]:
        """One ``_msearch``, asked again (up to ``attempts`` times, 0.5 s, 1 s, 2 s apart) while any of its
        searches misses shards or fails on the server's side (5xx): a node that just died leaves shards
        unanswered until the cluster has promoted their replicas, and partial hits must never pass for
        the top k. Other errors (a bad query: 4xx) are raised at once."""
        for attempt in range(attempts):
            endpoint = "_msearch/template" if self._stored_template else "_msearch"
            response = self.rest.request("POST", f"/{self.index}/{endpoint}", body=body, params=self._search_params())
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
        self.check_search()
        if self._stored_template:
            response = self.rest.request("POST", f"/{self.index}/_search/template",
                                         body=self.query.template_params(query, k), params=self._search_params())
        else:
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
        # the engine's own scores for the user's query; esrerank's match on its own index is put on Lucene's
        # scale (see ElasticsearchBM25.score_scale)
        scale = self.score_scale if self.query is None else 1.0
        return [Hit(self._doc_id(h), float(h["_score"]) * scale, rank)
                for rank, h in enumerate(response["hits"]["hits"], start=1)]

    def _doc_id(self, hit: dict) -> str:
        if not self.id_field:
            return hit["_id"]
        values = read_id(hit, self.id_field)
        if len(values) != 1:
            raise DataError("--id-field", f"document {hit['_id']!r} of {self.index!r} has "
                                          f"{'no' if not values else len(values)} values in {self.id_field!r}: "
                                          "every document needs exactly one id there")
        return values[0]

    def _query_body(self, query: str, k: int) -> dict:
        if self.query is not None:
            body = self.query.body(self._query_text(query), k)
        else:
            body = {"query": {"match": {FIELD: {"query": self._query_text(query)}}}, "size": k}
        body["_source"] = [self.id_field] if self.id_field and self.source_enabled else False
        if self.id_field and not self.source_enabled:
            body["stored_fields"] = [self.id_field]
        body["track_total_hits"] = False
        if self.search_pipeline:
            # the reranker reads the documents' fields from _source and the query as the user wrote it
            body["_source"] = True
            body["track_total_hits"] = True  # the rerank processor reads the total (2.19.1: NPE without it)
            body["ext"] = {"rerank": {"query_context": {"query_text": query}}}
        return body

    def fetch_texts(self, doc_ids: Sequence[str]) -> list[str]:
        """The text the reranker reads for each document: its :meth:`reranked_fields` joined in order, cut at
        ``max_text_chars``. Documents with no text there are reported (a warning with their ids); when no
        document has any, or an id is not in the index, it is an error."""
        self.check()
        paths = self.reranked_fields()
        sources = self._sources(list(dict.fromkeys(doc_ids)), paths)
        missing = [d for d in doc_ids if d not in sources]
        if missing:
            raise DataError("--index", f"{len(missing)} documents are not in index {self.index!r} "
                                       f"(e.g. {missing[0]!r}); ids there look like "
                                       f"{', '.join(map(repr, self.sample_doc_ids(3)))}")
        texts = self._texts(sources, paths)
        return [texts[d] for d in doc_ids]

    def texts_in_index(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """doc id → text, as :meth:`fetch_texts` reads it, for those of ``doc_ids`` the index has (the others
        are left out, not an error): one pass for a mix of found and possibly missing documents."""
        self.check()
        paths = self.reranked_fields()
        return self._texts(self._sources(list(dict.fromkeys(doc_ids)), paths), paths)

    def _texts(self, sources: dict[str, dict], paths: list[str]) -> dict[str, str]:
        """The reranker's text of each source (its ``paths`` joined, cut at ``max_text_chars``); documents
        without any are reported, and none having any is an error."""
        texts, empty, cut = {}, [], 0
        for doc_id, source in sources.items():
            text = join_fields(source, paths)
            if not text:
                empty.append(doc_id)
            if len(text) > self.max_text_chars:
                text, cut = text[: self.max_text_chars], cut + 1
            texts[doc_id] = text
        if empty and len(empty) == len(texts):
            raise DataError("--rerank-fields", f"none of {len(texts)} documents of {self.index!r} has text in "
                                               f"{', '.join(paths)}; its text fields: "
                                               f"{', '.join(text_fields(self.fields)) or 'none'}")
        if empty:
            logger.warning("%d of %d documents of %s have no text in %s (e.g. %s): the reranker scores them on an "
                           "empty text", len(empty), len(texts), self.index, ", ".join(paths), ", ".join(empty[:3]))
        if cut:
            logger.info("%d documents cut at %d characters", cut, self.max_text_chars)
        return texts

    def _sources(self, doc_ids: list[str], paths: list[str]) -> dict[str, dict]:
        """doc id → its ``_source`` (or stored fields, when ``_source`` is disabled) restricted to ``paths``,
        for the documents that are in the index."""
        wanted = paths + ([self.id_field] if self.id_field else [])
        if not wanted:
            read = {"_source": "false"}
        elif self.source_enabled:
            read = {"_source_includes": ",".join(wanted)}
        else:
            read = {"stored_fields": ",".join(wanted)}
        lookup = self._id_lookup_field() if self.id_field else None
        found: dict[str, dict] = {}
        for start in range(0, len(doc_ids), 1000):
            chunk = doc_ids[start:start + 1000]
            if lookup:
                body = {"query": {"terms": {lookup: chunk}}, "size": len(chunk) * 2, "track_total_hits": False}
                body.update({"_source": {"includes": wanted}} if self.source_enabled else {"stored_fields": wanted})
                docs = self.rest.request("POST", f"/{self.index}/_search", body=body)["hits"]["hits"]
            else:
                docs = [d for d in self.rest.request("POST", f"/{self.index}/_mget", body={"ids": chunk},
                                                     params=read)["docs"] if d.get("found")]
            for doc in docs:
                doc_id = self._doc_id(doc)
                if doc_id in found:
                    raise DataError("--id-field", f"two documents of {self.index!r} have the id {doc_id!r} in "
                                                  f"{self.id_field!r}")
                found[doc_id] = doc.get("_source", doc.get("fields", {}))
        return found

    def _id_lookup_field(self) -> str:
        """The field an ``id_field`` value is looked up in by exact value: itself, or its keyword sub-field."""
        fields = self.fields
        field = fields[self.id_field]
        if field.type in ("keyword", "constant_keyword", "long", "integer", "short", "byte", "unsigned_long"):
            return self.id_field
        keyword = next((f.path for f in fields.values() if f.parent == self.id_field and f.type == "keyword"), None)
        if keyword is None:
            raise DataError("--id-field", f"{self.id_field!r} is a {field.type} field of {self.index!r}: documents "
                                          "are looked up by their id, so it must be keyword (or a number, or have a "
                                          "keyword sub-field)")
        return keyword

    def missing_doc_ids(self, doc_ids: Sequence[str]) -> list[str]:
        """The ids of ``doc_ids`` that no document of the index has (``_id``, or ``id_field``)."""
        unique = list(dict.fromkeys(doc_ids))
        present = set(self._sources(unique, []))
        return [d for d in unique if d not in present]

    def sample_doc_ids(self, count: int = 3) -> list[str]:
        """A few documents' ids, to show what the index's ids look like."""
        body = {"size": count, "_source": [self.id_field] if self.id_field else False, "track_total_hits": False}
        if self.id_field and not self.source_enabled:
            body.update({"_source": False, "stored_fields": [self.id_field]})
        hits = self.rest.request("POST", f"/{self.index}/_search", body=body)["hits"]["hits"]
        return [self._doc_id(h) for h in hits]

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
            # the engine's own "no such index"; a 404 from something that is not an engine is its error
            if exc.status == 404 and "index_not_found" in str(exc):
                return False
            raise

    def alias_targets(self, alias: str) -> list[str]:
        try:
            return sorted(self.rest.request("GET", f"/_alias/{alias}"))
        except EngineError as exc:
            if exc.status == 404:
                return []
            raise

    def mappings_of(self, name: str) -> dict:
        """The ``mappings`` of an index, or of the first index behind an alias."""
        answer = self.rest.request("GET", f"/{name}/_mapping")
        return next(iter(answer.values()))["mappings"] if answer else {}

    def index_meta(self, name: str) -> dict:
        """The esrerank ``_meta`` of an index or of the one index behind an alias; {} for a foreign index."""
        return self.mappings_of(name).get("_meta", {}).get("esrerank", {})

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
