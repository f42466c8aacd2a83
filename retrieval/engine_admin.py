"""Administering indices on an Elasticsearch/OpenSearch server: creating them with a BM25 similarity,
loading, refreshing, merging, aliasing, deleting, and asking the server about its analyzers.

:class:`IndexAdmin` works on any index of the server by name; the searchers of ``retrieval.engines``
extend it (a searcher is also its server's administrator), and ``retrieval.indexing`` drives a load
through these methods.

Analysis. Where the server has Elasticsearch's built-in ``english``/``standard`` analyzer it is used
("native" analysis). Servers without the ``analysis-common`` module (the integ-test distributions on
Maven Central) lack ``english``; there the index stores the terms esrerank's own analyzer produced (an
exact replica of the built-in one, checked against OpenSearch's ``_analyze`` in the tests) in a field
analyzed by ``whitespace``, and queries are analyzed the same way ("client" analysis). Either way the
index's ``_meta`` records which, so a searcher always analyzes queries as the index was built.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from esrerank_errors import EngineError, EnginePermissionError

from .analysis import get_analyzer
from .engine_rest import error_reason
from .source_fields import mapping_from_field_caps

logger = logging.getLogger(__name__)

FIELD = "contents"  # the indexed field: title and text joined, as the in-memory index does
SIMILARITY = "esrerank_bm25"


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




# the settings a searcher needs, copied into the indexed field's meta (at most 5 string values there)
FIELD_META_KEYS = ("format", "analysis", "analyzer", "k1", "b")


def field_meta(meta: dict) -> dict:
    return {key: str(meta[key]) for key in FIELD_META_KEYS if key in meta}


def meta_from_field(meta: dict) -> dict:
    """The settings of :func:`field_meta` with their types back."""
    typed = dict(meta)
    for key, kind in (("format", int), ("k1", float), ("b", float)):
        if key in typed:
            typed[key] = kind(typed[key])
    return typed


class IndexAdmin:
    """The indices of one server, by name, through a REST adapter (``retrieval.engine_rest``).

    Args:
        rest: the adapter every request goes through; its ``engine`` and ``url`` name the server in errors.
    """

    def __init__(self, rest):
        self.rest = rest

    # --- the server's analyzers ------------------------------------------------------------------

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
        engine, url = self.rest.engine, self.rest.url
        if settings.analysis in ("native", "client"):
            try:
                missing = settings.analysis == "native" and not self.has_analyzer(settings.analyzer)
            except EnginePermissionError:  # may not ask: creating the index with the analyzer tells
                missing = False
            if missing:
                raise EngineError(400, f"{engine} at {url} has no {settings.analyzer!r} analyzer "
                                       "(no analysis-common module); use analysis 'client' or 'auto'")
            return settings
        try:
            native = self.has_analyzer(settings.analyzer)
        except EnginePermissionError as exc:
            # _analyze is a cluster privilege (Elasticsearch: manage) that indexing need not have: creating the
            # index tells as well (create_index with analysis "auto")
            logger.info("%s: whether the server has the %r analyzer is settled by creating the index", exc,
                        settings.analyzer)
            return settings
        if not native:
            self._log_replica(settings.analyzer)
        return IndexConfig(**{**asdict(settings), "analysis": "native" if native else "client"})

    def _log_replica(self, analyzer: str) -> None:
        logger.info("%s at %s has no %r analyzer: indexing esrerank's replica of it (pre-analyzed terms)",
                    self.rest.engine, self.rest.url, analyzer)

    # --- what an index is ------------------------------------------------------------------------

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
                    # the settings are the field's meta too: _field_caps shows it to a user with read alone
                    FIELD: {"type": "text", "analyzer": analyzer, "similarity": SIMILARITY,
                            "meta": field_meta(meta)},
                    "title": {"type": "text", "index": False},
                    "text": {"type": "text", "index": False},
                },
            },
        }

    def exists(self, name: str) -> bool:
        try:
            try:
                self.rest.request("GET", f"/{name}/_settings")  # HEAD answers 404 without raising in one client
            except EnginePermissionError:  # a user with read alone: a search that finds nothing says it too
                self.rest.request("POST", f"/{name}/_search", body={"size": 0, "track_total_hits": False})
            return True
        except EngineError as exc:
            # the engine's own "no such index"; a 404 from something that is not an engine is its error
            if exc.status == 404 and "index_not_found" in str(exc):
                return False
            raise

    def alias_targets(self, alias: str) -> list[str]:
        try:
            # asked through the alias itself: a user whose privileges cover the alias's indices alone may ask
            return sorted(self.rest.request("GET", f"/{alias}/_alias/{alias}"))
        except EngineError as exc:
            if exc.status == 404:
                return []
            raise

    def primary_shards(self, name: str) -> int:
        """Primary shards of an index, or of all the indices an alias points to."""
        try:
            settings = self.rest.request("GET", f"/{name}/_settings",
                                         params={"filter_path": "*.settings.index.number_of_shards"})
        except EnginePermissionError as exc:
            # read alone: a search reports the shards it asked, one per primary
            logger.info("%s; counting %s's shards from a search instead", exc.message, name)
            answer = self.rest.request("POST", f"/{name}/_search", body={"size": 0, "track_total_hits": False})
            return int(answer["_shards"]["total"])
        return sum(int(entry["settings"]["index"]["number_of_shards"]) for entry in settings.values())

    def mappings_of(self, name: str) -> dict:
        """The ``mappings`` of an index, or of the first index behind an alias. A user who may read the
        index but not its mapping gets one rebuilt from ``_field_caps`` (types, objects, multi-fields and
        esrerank's settings; ``_source`` taken as enabled), with a line saying so."""
        try:
            answer = self.rest.request("GET", f"/{name}/_mapping")
        except EnginePermissionError as exc:
            logger.warning("%s; the fields of %s are read from _field_caps instead (enough unless _source is "
                           "disabled)", exc.message, name)
            caps = self.rest.request("GET", f"/{name}/_field_caps", params={"fields": "*"})
            mapping = mapping_from_field_caps(caps, FIELD)
            if "_meta" in mapping:
                mapping["_meta"]["esrerank"] = meta_from_field(mapping["_meta"]["esrerank"])
            elif FIELD in mapping["properties"]:
                logger.warning("%s looks built by an older 'esrerank index', which kept its settings in the "
                               "mapping alone: queries are sent as typed, which is wrong if it was built with "
                               "client analysis; rebuild it, or grant this user the mapping", name)
            return mapping
        return next(iter(answer.values()))["mappings"] if answer else {}

    def index_meta(self, name: str) -> dict:
        """The esrerank ``_meta`` of an index or of the one index behind an alias; {} for a foreign index."""
        return self.mappings_of(name).get("_meta", {}).get("esrerank", {})

    def put_meta(self, name: str, meta: dict) -> None:
        self.rest.request("PUT", f"/{name}/_mapping", body={"_meta": {"esrerank": meta}})

    def list_indices(self, pattern: str) -> list[str]:
        response = self.rest.request("GET", f"/_cat/indices/{pattern}", params={"format": "json", "h": "index"})
        return sorted(row["index"] for row in response)

    def count(self, name: str) -> int:
        """Documents in ``name``, after a refresh."""
        self.refresh(name)
        return int(self.rest.request("GET", f"/{name}/_count")["count"])

    # --- loading an index (used by retrieval.indexing) ---------------------------------------------

    def create_index(self, name: str, settings: IndexConfig, meta: dict) -> IndexConfig:
        """Create ``name``; ``analysis="auto"`` (left so when the server's analyzers could not be asked) tries
        the server's analyzer and, where the server has none by that name, esrerank's replica. Returns the
        settings the index was made with."""
        if settings.analysis != "auto":
            self.rest.request("PUT", f"/{name}", body=self.index_body(settings, meta))
            return settings
        native = IndexConfig(**{**asdict(settings), "analysis": "native"})
        try:
            self.rest.request("PUT", f"/{name}", body=self.index_body(native, {**meta, "analysis": "native"}))
            return native
        except EngineError as exc:
            if not (exc.status == 400 and f"analyzer [{settings.analyzer}]" in str(exc)):
                raise
        self._log_replica(settings.analyzer)
        client = IndexConfig(**{**asdict(settings), "analysis": "client"})
        self.rest.request("PUT", f"/{name}", body=self.index_body(client, {**meta, "analysis": "client"}))
        return client

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
        wait_s = 0.25  # a small index merges in a moment: ask soon, then every poll_s
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
            if wait_s >= poll_s:
                logger.info("waiting for the force merge of %s (task %s)", name, task)
            time.sleep(wait_s)
            wait_s = min(poll_s, wait_s * 2)

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
