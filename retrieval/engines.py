"""Elasticsearch and OpenSearch as the first stage: BM25 search with the in-memory index's interface.

Both engines speak the same REST API for everything used here (``_msearch``, ``_mget``, search templates),
so there is one searcher, :class:`SearchEngineBM25`; the two public classes only pick the client library's
adapter. Where its parts live:

- ``retrieval.engine_rest``: the REST adapters over ``elasticsearch`` and ``opensearch-py`` (URL checks,
  failover between nodes, the libraries' exceptions as esrerank's);
- ``retrieval.engine_admin``: index administration (creating an index with its BM25 similarity and
  analyzer, loading, merging, aliases), which ``retrieval.indexing`` drives;
- ``retrieval.engine_documents``: one index's mapping and its documents read by id (the reranker's text);
- this module: checking the user's options against the index, and searching.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from typing import Sequence

from esrerank_errors import DataError, EngineError, InputError

from .analysis import get_analyzer
from .engine_admin import FIELD
from .engine_connection import EngineConnection
from .engine_documents import IndexDocuments
from .engine_query import EngineQuery
from .engine_rest import ElasticsearchRest, OpenSearchRest, error_reason, ndjson
from .records import Hit
from .source_fields import MappedField, check_fields, source_path, text_fields

logger = logging.getLogger(__name__)


class SearchEngineBM25(IndexDocuments):
    """BM25 over an Elasticsearch/OpenSearch index (or alias), with the in-memory index's interface.

    An index built by ``esrerank index`` is searched on its ``contents`` field and read from its ``title``
    and ``text``. Any other index is searched with the user's own query (``query``) and read from the
    fields the user names (``rerank_fields``, else the rule of :meth:`reranked_fields`).

    Args:
        connection: the cluster: an :class:`~retrieval.engine_connection.EngineConnection` (URL, TLS,
            credentials), or its URL alone, e.g. ``http://127.0.0.1:9200``.
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
        rescore: the name of a rescorer a plugin adds to Elasticsearch (``esrerank``: the plugin in
            ``plugins/elasticsearch``, which calls ``esrerank serve`` from every shard): searches given
            ``restrict_to`` rerank those documents inside the engine, reading :meth:`reranked_fields`
            from ``_source``. Default None (BM25 only). See ``pipelines.retrieve_rerank.EngineReranker``.
        sniff: ask the cluster for its nodes at start (and again when one fails) and spread requests
            over them. Default False: a server in a container often publishes addresses the client cannot
            reach. Several nodes can also be given in ``url``, separated by commas; either way a request
            whose node cannot be reached is sent to another.
    """

    engine = "engine"
    _adapter = None

    def __init__(self, connection: EngineConnection | str = "http://127.0.0.1:9200", index: str = "esrerank",
                 msearch_batch: int = 64, request_timeout: float = 120.0, search_pipeline: str | None = None,
                 dfs: bool | None = None,
                 sniff: bool = False, query: EngineQuery | None = None, rerank_fields: Sequence[str] | None = None,
                 id_field: str | None = None, max_text_chars: int = 20_000, rescore: str | None = None):
        if search_pipeline is not None and self.engine != "opensearch":
            raise DataError("--search-pipeline", "search pipelines are OpenSearch's; Elasticsearch reranks through its "
                                                 "esrerank rescorer plugin (--rescore esrerank)")
        if rescore is not None and self.engine != "elasticsearch":
            raise DataError("--rescore", "the esrerank rescorer is an Elasticsearch plugin; OpenSearch reranks through "
                                         "a search pipeline (--search-pipeline)")
        if rescore is not None and query is not None and query.template_id is not None:
            raise DataError("--rescore", "a stored search template cannot be given a rescore section: give the "
                                         "template as a file (--query-template FILE) or --fields")
        super().__init__(self._adapter(connection, request_timeout, sniff), index, id_field, max_text_chars)
        self.url = self.rest.url  # as shown: credentials hidden
        self.msearch_batch = msearch_batch
        self.search_pipeline = search_pipeline
        self.rescore = rescore
        self.query = query
        self.rerank_fields = list(rerank_fields) if rerank_fields else None
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

    def _query_text(self, query: str) -> str:
        if self.meta.get("analysis") == "client":
            return " ".join(get_analyzer(self.meta["analyzer"])(query))
        return query

    # --- checking the user's options against the index's mapping ---------------------------------

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

    def search_many(self, queries: Sequence[str], k: int = 10,
                    restrict_to: Sequence[Sequence[str]] | None = None) -> list[list[Hit]]:
        """Top ``k`` per query with ``_msearch`` in batches of ``msearch_batch``; no ``_source``, no
        total-hit counting.

        restrict_to: per query, the only documents (ids) it may find; the first-stage scores are unchanged (a
            filter). With ``rescore``, how a first stage's top k is reranked inside the engine: an
            Elasticsearch rescorer's window is each shard's top hits, so on several shards the window
            would hold more than the index's top k; restricted to them, it is exactly those."""
        if isinstance(queries, str):
            raise TypeError("search_many takes a list of query strings; use search() for one query")
        if not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        for number, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise InputError(f"query {number} is empty or not a string: {query!r}")
        if restrict_to is not None and len(restrict_to) != len(queries):
            raise InputError(f"restrict_to has {len(restrict_to)} id lists for {len(queries)} queries")
        self.check_search()
        if self.search_pipeline:
            return self._search_through_pipeline(queries, k)
        results: list[list[Hit]] = []
        for start in range(0, len(queries), self.msearch_batch):
            end = start + self.msearch_batch
            results.extend(self._complete_msearch(self._msearch_body(
                queries[start:end], k, None if restrict_to is None else restrict_to[start:end])))
        if len(queries) > 1 and not any(results):
            raise DataError("--index", f"none of the {len(queries)} queries found a document in {self.index!r} "
                                       f"with {self.query.describe() if self.query else f'a match on {FIELD}'}: "
                                       f"check the fields or the template; the index's text fields: "
                                       f"{', '.join(text_fields(self.fields)) or 'none'}")
        return results

    def _msearch_body(self, queries: Sequence[str], k: int, restrict_to: Sequence[Sequence[str]] | None = None) -> str:
        lines = []
        for number, query in enumerate(queries):
            lines.append({})
            if self._stored_template:
                if restrict_to is not None:
                    raise InputError("restrict_to needs a query esrerank writes, not a stored search template")
                lines.append(self.query.template_params(query, k))
            else:
                lines.append(self._query_body(query, k, None if restrict_to is None else restrict_to[number]))
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
                # a bad query (4xx), or the rescorer's service failing: asking again would only wait again
                if "error" in item and (item.get("status", 500) < 500 or RESCORER_FAILURE in error_reason(item)):
                    raise EngineError(item["status"], error_reason(item))
            failed = [item for item in items if "error" in item or item.get("_shards", {}).get("failed")]
            for item in failed:  # some shards' rescorer failed: the service, not the shards; say it at once
                failures = item.get("_shards", {}).get("failures", [])
                reasons = [str(failure.get("reason", {}).get("reason", "")) for failure in failures]
                rescorer = next((r for r in reasons if RESCORER_FAILURE in r), None)
                if rescorer:
                    raise EngineError(500, rescorer)
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
        # (a rescorer's scores are the cross-encoder's: never scaled)
        scale = self.score_scale if self.query is None and not self.rescore else 1.0
        return [Hit(self._doc_id(h), float(h["_score"]) * scale, rank)
                for rank, h in enumerate(response["hits"]["hits"], start=1)]

    def _query_body(self, query: str, k: int, restrict_to: Sequence[str] | None = None) -> dict:
        if self.query is not None:
            body = self.query.body(self._query_text(query), k)
        else:
            body = {"query": {"match": {FIELD: {"query": self._query_text(query)}}}, "size": k}
        if restrict_to is not None:
            only = ({"terms": {self._id_lookup_field(): list(restrict_to)}} if self.id_field
                    else {"ids": {"values": list(restrict_to)}})
            # "should", not "must": a listed document the query does not match (a run from elsewhere) is still
            # found, with the score the first stage would give it (0), instead of silently missing
            body["query"] = {"bool": {"should": [body.get("query", {"match_all": {}})], "filter": [only]}}
        if self.rescore:
            # the window is the k hits asked for; the rescorer reads the same fields as the client side
            body["rescore"] = {"window_size": k, self.rescore: {"query": query, "fields": self.reranked_fields()}}
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


class ElasticsearchBM25(SearchEngineBM25):
    """BM25 search over an Elasticsearch index (client: ``elasticsearch``)."""

    engine = "elasticsearch"
    _adapter = ElasticsearchRest

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
    _adapter = OpenSearchRest


RESCORER_FAILURE = "esrerank rescorer:"  # how the plugin's errors begin (plugins/elasticsearch RerankService)

ENGINES = {"elasticsearch": ElasticsearchBM25, "opensearch": OpenSearchBM25}


def connect(engine: str, connection: EngineConnection | str, index: str, **kwargs) -> SearchEngineBM25:
    """The searcher of ``engine`` (elasticsearch or opensearch) over ``index``; ``connection``: an
    :class:`~retrieval.engine_connection.EngineConnection` or a URL; ``kwargs``: see :class:`SearchEngineBM25`."""
    try:
        searcher = ENGINES[engine]
    except KeyError:
        raise InputError(f"unknown engine {engine!r}; choose one of {sorted(ENGINES)}") from None
    return searcher(connection, index, **kwargs)
