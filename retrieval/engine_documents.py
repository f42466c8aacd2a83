"""One index (or alias) of an Elasticsearch/OpenSearch server: its mapping, and its documents read by id.

This is how the reranker's text reaches it from an engine: :meth:`IndexDocuments.fetch_texts` reads the
fields the searcher chose (``reranked_fields``) from each document's ``_source`` (or its stored fields,
where ``_source`` is disabled), joins them in order and cuts them at ``max_text_chars``. Documents are
named by ``_id``, or by the value of a field of the user's (``id_field``), as the user's qrels name them.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Sequence

from esrerank_errors import DataError

from .engine_admin import IndexAdmin
from .source_fields import MappedField, join_fields, mapped_fields, read_path, text_fields

logger = logging.getLogger(__name__)

# field types a document can be looked up in by exact value with a ``terms`` query
EXACT_TYPES = ("keyword", "constant_keyword", "long", "integer", "short", "byte", "unsigned_long")


class IndexDocuments(IndexAdmin):
    """The documents of the index ``index``, read by id. The searchers of ``retrieval.engines`` extend it:
    they decide which fields the reranker reads (:meth:`reranked_fields`) and check the user's options
    against the mapping before the first read (:meth:`check`).

    Args:
        rest: the REST adapter (``retrieval.engine_rest``).
        index: index or alias name.
        id_field: the field holding the documents' ids; None: ``_id``. See ``SearchEngineBM25``.
        max_text_chars: the longest text read for one document; longer ones are cut.
    """

    def __init__(self, rest, index: str, id_field: str | None = None, max_text_chars: int = 20_000):
        super().__init__(rest)
        self.index = index
        self.id_field = id_field
        self.max_text_chars = max_text_chars

    def reranked_fields(self) -> list[str]:
        """The ``_source`` fields whose text is read, in order; the searcher's choice (it knows the query)."""
        raise NotImplementedError

    def check(self) -> None:
        """Check the user's options against the index, once, before the first read; the searcher's check."""
        raise NotImplementedError

    # --- the index's mapping ------------------------------------------------------------------------

    @cached_property
    def mapping(self) -> dict:
        """The index's ``mappings`` (of the first index behind an alias), read once."""
        return self.mappings_of(self.index)

    @cached_property
    def meta(self) -> dict:
        """The esrerank ``_meta`` of the index (analysis mode, analyzer, k1, b); {} for a foreign index."""
        return self.mapping.get("_meta", {}).get("esrerank", {})

    @cached_property
    def fields(self) -> dict[str, MappedField]:
        """The index's fields by dotted path."""
        return mapped_fields(self.mapping)

    @property
    def source_enabled(self) -> bool:
        return self.mapping.get("_source", {}).get("enabled", True)

    def count(self, name: str | None = None) -> int:
        """Documents in ``name`` (default: this index), after a refresh."""
        return super().count(name or self.index)

    # --- documents by id -----------------------------------------------------------------------------

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

    # --- the documents' ids ----------------------------------------------------------------------------

    def _doc_id(self, hit: dict) -> str:
        """The id of a hit or fetched document: its ``_id``, or its one value of ``id_field``."""
        if not self.id_field:
            return hit["_id"]
        values = read_id(hit, self.id_field)
        if len(values) != 1:
            raise DataError("--id-field", f"document {hit['_id']!r} of {self.index!r} has "
                                          f"{'no' if not values else len(values)} values in {self.id_field!r}: "
                                          "every document needs exactly one id there")
        return values[0]

    def _id_lookup_field(self) -> str:
        """The field an ``id_field`` value is looked up in by exact value: itself, or its keyword sub-field."""
        fields = self.fields
        field = fields[self.id_field]
        if field.type in EXACT_TYPES:
            return self.id_field
        keyword = next((f.path for f in fields.values() if f.parent == self.id_field and f.type == "keyword"), None)
        if keyword is None:
            raise DataError("--id-field", f"{self.id_field!r} is a {field.type} field of {self.index!r}: documents "
                                          "are looked up by their id, so it must be keyword (or a number, or have a "
                                          "keyword sub-field)")
        return keyword


def read_id(hit: dict, id_field: str) -> list[str]:
    """The values of ``id_field`` in a hit: from its ``_source``, or from its stored ``fields``."""
    if "_source" in hit:
        return read_path(hit["_source"], id_field)
    return [str(value) for value in hit.get("fields", {}).get(id_field, [])]
