"""The user's own first stage: which query an engine searcher sends for a query text.

An index built by ``esrerank index`` is searched with a ``match`` on its ``contents`` field. Anyone else's
index is searched the way its owner searches it in production:

- named fields (``--fields headline^2,body``): a ``multi_match`` query over them, ``best_fields`` unless
  another type is chosen, boosts as written;
- a query template (``--query-template FILE``): a search request body (or a bare query clause) in which
  ``{{query}}`` stands for the query text, as in the engines' own mustache search templates; so filters,
  boosts, function scores and hybrid queries with a kNN part are the first stage exactly as written. A
  string that is exactly ``"{{size}}"`` becomes the number of hits asked for (e.g. a kNN part's ``k``);
- a stored search template (``--query-template NAME`` when NAME is not a file): run with
  ``_msearch/template`` and the parameters ``query`` and ``size``; it must set its ``size`` from
  ``{{size}}`` (checked once with ``_render/template``).

Substitution is done on the parsed JSON, never on its text, so a query holding quotes or backslashes
cannot change the request's structure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from esrerank_errors import DataError, InputError

PLACEHOLDER = "{{query}}"
SIZE_PLACEHOLDER = "{{size}}"
MATCH_TYPES = ("best_fields", "most_fields", "cross_fields", "phrase", "phrase_prefix", "bool_prefix")
_BOOST = re.compile(r"^(?P<name>[^\s^]+)(\^(?P<boost>\d+(\.\d+)?))?$")
# keys that make a JSON object a whole search request rather than a query clause
_REQUEST_KEYS = {"query", "knn", "rank", "retriever", "post_filter", "rescore", "min_score", "sort", "collapse",
                 "suggest", "aggs", "aggregations", "search_after", "ext", "highlight"}


@dataclass(frozen=True)
class EngineQuery:
    """What is sent for each query text. Exactly one of ``fields``, ``template`` or ``template_id``.

    fields: field names for a ``multi_match``, each with an optional ``^boost`` (``("headline^2", "body")``).
    match_type: the ``multi_match`` type. Default ``best_fields``, the engines' own default.
    template: a search request body holding ``{{query}}`` (parsed JSON).
    template_id: the id of a search template stored on the engine.
    source: where the query came from (a file name, the flag), for messages.
    """

    fields: tuple[str, ...] = ()
    match_type: str = "best_fields"
    template: dict | None = None
    template_id: str | None = None
    source: str = ""

    def __post_init__(self):
        if sum((bool(self.fields), self.template is not None, self.template_id is not None)) != 1:
            raise InputError("an EngineQuery has exactly one of fields, template or template_id (--fields or "
                             "--query-template)")
        if self.match_type not in MATCH_TYPES:
            raise DataError(self.source or "--match-type", f"unknown multi_match type {self.match_type!r}; one of "
                                                           f"{', '.join(MATCH_TYPES)}")

    @property
    def field_names(self) -> list[str]:
        """The fields named, boosts dropped."""
        return [split_boost(field)[0] for field in self.fields]

    def body(self, text: str, size: int) -> dict:
        """The search request for one query text (not for a stored template: see ``template_params``)."""
        if self.fields:
            return {"query": {"multi_match": {"query": text, "fields": list(self.fields), "type": self.match_type}},
                    "size": size}
        body = fill(self.template, text, size)
        if not _REQUEST_KEYS & body.keys():  # a bare query clause
            body = {"query": body}
        body["size"] = size
        return body

    def template_params(self, text: str, size: int) -> dict:
        """The ``_msearch/template`` item of a stored template for one query text."""
        return {"id": self.template_id, "params": {"query": text, "size": size}}

    def describe(self) -> str:
        if self.fields:
            return f"multi_match ({self.match_type}) over {', '.join(self.fields)}"
        if self.template is not None:
            return f"query template {self.source}"
        return f"stored search template {self.template_id!r}"


def split_boost(field: str) -> tuple[str, float | None]:
    """``"headline^2"`` → ``("headline", 2.0)``; a name without a boost → ``(name, None)``."""
    match = _BOOST.match(field.strip())
    if not match:
        raise DataError("--fields", f"not a field name with an optional ^boost: {field!r}")
    boost = match.group("boost")
    return match.group("name"), float(boost) if boost is not None else None


def parse_fields(spec: str, source: str = "--fields") -> tuple[str, ...]:
    """``"headline^2, body"`` → ``("headline^2", "body")``; an empty list is an error."""
    fields = tuple(part.strip() for part in spec.split(",") if part.strip())
    if not fields:
        raise DataError(source, "name at least one field")
    for field in fields:
        split_boost(field)
    return fields


def fill(template: Any, text: str, size: int) -> Any:
    """A copy of ``template`` with ``{{query}}`` replaced by ``text`` in every string, and every string that
    is exactly ``{{size}}`` replaced by the number ``size``."""
    if isinstance(template, dict):
        return {key: fill(value, text, size) for key, value in template.items()}
    if isinstance(template, list):
        return [fill(value, text, size) for value in template]
    if isinstance(template, str):
        if template == SIZE_PLACEHOLDER:
            return size
        return template.replace(PLACEHOLDER, text)
    return template


def _holds_placeholder(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_placeholder(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_placeholder(v) for v in value)
    return isinstance(value, str) and PLACEHOLDER in value


def read_query_template(path) -> EngineQuery:
    """A query template file: JSON holding ``{{query}}``. Errors name the file, the line and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(path, f"cannot read the query template: {exc.strerror}") from None
    try:
        template = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    if not isinstance(template, dict):
        raise DataError(path, "a query template is a JSON object: a search request body or a query clause")
    if not _holds_placeholder(template):
        raise DataError(path, f"the query template has no {PLACEHOLDER} placeholder: every query would get the "
                              "same hits; write the query text's place as \"{{query}}\"")
    return EngineQuery(template=template, source=str(path))


def query_from_options(fields: str | Sequence[str] | None = None, query_template: str | None = None,
                       match_type: str = "best_fields") -> EngineQuery | None:
    """The ``EngineQuery`` the options name (the command line's ``--fields``/``--query-template``), or None:
    ``query_template`` is a file when one is there, else a stored template's id."""
    if fields and query_template:
        raise DataError("--fields", "give either --fields or --query-template, not both")
    if fields:
        named = parse_fields(fields) if isinstance(fields, str) else parse_fields(",".join(fields))
        return EngineQuery(fields=named, match_type=match_type, source="--fields")
    if query_template:
        if Path(query_template).is_file() or query_template.endswith(".json") or "/" in query_template:
            return read_query_template(query_template)
        return EngineQuery(template_id=query_template, source="--query-template")
    return None
