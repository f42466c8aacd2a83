"""Reading an index's mapping and its documents' ``_source``: which fields hold text, and the text the
reranker reads from the fields a user names.

Paths are dotted (``author.name``) and may run through ``object`` and ``nested`` fields; where a path meets a
list (a nested field, an array), every element's value is read, in order. The fields' values are joined
with a space in the order the fields are named, as the in-memory index joins title and text.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from esrerank_errors import DataError

# names read first when the reranker's fields are chosen from a mapping: the short field that says what a
# document is about leads, as a title does in the in-memory index's "title text"
TITLE_NAMES = ("title", "headline", "subject", "heading")


@dataclass(frozen=True)
class MappedField:
    """One field of a mapping. ``path``: dotted; ``type``: the mapping type; ``parent``: for a multi-field
    (``body.keyword``), the field whose ``_source`` value it indexes, else None; ``stored``: ``store: true``."""

    path: str
    type: str
    parent: str | None = None
    stored: bool = False


def mapped_fields(mapping: Mapping[str, Any]) -> dict[str, MappedField]:
    """Every field of one index's ``mappings`` (as ``GET index/_mapping`` gives it), by dotted path."""
    fields: dict[str, MappedField] = {}

    def walk(properties: Mapping[str, Any], prefix: str) -> None:
        for name, spec in properties.items():
            path = f"{prefix}{name}"
            kind = spec.get("type", "object" if "properties" in spec else "unknown")
            fields[path] = MappedField(path, kind, stored=bool(spec.get("store")))
            for sub, sub_spec in spec.get("fields", {}).items():  # multi-fields: same _source value
                fields[f"{path}.{sub}"] = MappedField(f"{path}.{sub}", sub_spec.get("type", "unknown"), parent=path)
            if "properties" in spec:
                walk(spec["properties"], f"{path}.")

    walk(mapping.get("properties", {}), "")
    return fields


def mapping_from_field_caps(answer: Mapping[str, Any], meta_field: str | None = None) -> dict:
    """A ``mappings`` dict rebuilt from a ``_field_caps`` answer, for a user who may read an index but not its
    mapping (``_field_caps`` needs ``read`` alone): each field's type, objects and multi-fields. What
    ``_field_caps`` does not tell is left at the engines' defaults: ``_source`` enabled, no stored field. The
    ``meta`` of ``meta_field`` (where an index's builder left its settings, field meta being what
    ``_field_caps`` shows) becomes the mapping's ``_meta``, under ``esrerank``."""
    properties: dict = {}
    specs: dict[str, dict] = {}
    meta: dict = {}
    for path in sorted(answer.get("fields", {}), key=lambda p: (p.count("."), p)):
        types = answer["fields"][path]
        if path.startswith("_") or not isinstance(types, dict):
            continue
        # an alias over indices that map the field differently: text where any has it (what is read), else
        # the first
        kinds = [k for k in types if k != "unmapped"]
        kind = "text" if "text" in kinds else (kinds[0] if kinds else None)
        caps = types.get(kind, {})
        if kind is None or caps.get("metadata_field"):
            continue
        if path == meta_field:
            meta = {key: values[0] for key, values in caps.get("meta", {}).items() if values}
        parent, _, name = path.rpartition(".")
        if kind == "object":  # its type is implied by its properties
            spec: dict = {"properties": {}}
        elif kind == "nested":
            spec = {"type": kind, "properties": {}}
        else:
            spec = {"type": kind}
        holder = properties
        if parent:
            parent_spec = specs.get(parent)
            if parent_spec is None:  # a field of an object _field_caps did not list on its own
                continue
            holder = parent_spec.setdefault("fields" if "properties" not in parent_spec else "properties", {})
        holder[name] = spec
        specs[path] = spec
    mapping: dict = {"properties": properties}
    if meta:
        mapping["_meta"] = {"esrerank": meta}
    return mapping


def text_fields(fields: Mapping[str, MappedField]) -> list[str]:
    """The ``text`` fields that hold their own ``_source`` value (multi-fields left out), title-like names
    first, then by name."""
    names = [f.path for f in fields.values() if f.type in ("text", "match_only_text") and f.parent is None]
    return sorted(names, key=lambda path: (path.rsplit(".", 1)[-1] not in TITLE_NAMES, path))


def source_path(path: str, fields: Mapping[str, MappedField]) -> str:
    """The ``_source`` path a searched field reads: a multi-field's parent, else the path itself."""
    field = fields.get(path)
    return field.parent if field is not None and field.parent else path


def read_path(source: Any, path: str) -> list[str]:
    """The values at a dotted path of a ``_source`` document, as strings; lists are read element by element.
    Also finds a key that itself holds dots (``{"a.b": ...}``), as the engines accept."""
    if source is None:
        return []
    if isinstance(source, list):
        return [value for item in source for value in read_path(item, path)]
    if not path:
        if isinstance(source, (dict, bool)):
            return []
        return [str(source)] if str(source).strip() else []
    if not isinstance(source, dict):
        return []
    if path in source:
        return read_path(source[path], "")
    head, _, rest = path.partition(".")
    values = read_path(source.get(head), rest) if head in source else []
    if not values:  # a key that holds dots, e.g. {"meta.title": ...}
        for key in source:
            if path.startswith(f"{key}.") and "." in key:
                values = read_path(source[key], path[len(key) + 1:])
                if values:
                    break
    return values


def join_fields(source: Any, paths: Iterable[str]) -> str:
    """The text of the named fields of one ``_source`` document, joined with a space in the given order."""
    return " ".join(value for path in paths for value in read_path(source, path) if value.strip())


def check_fields(named: Iterable[str], fields: Mapping[str, MappedField], index: str, option: str) -> None:
    """Each named field must be in the mapping (wildcards must match one); the error lists the text fields."""
    for name in named:
        if "*" in name:
            if not any(fnmatch.fnmatchcase(path, name) for path in fields):
                raise DataError(option, f"{name!r} matches no field of index {index!r}; its text fields: "
                                         f"{', '.join(text_fields(fields)) or 'none'}")
        elif name not in fields:
            raise DataError(option, f"index {index!r} has no field {name!r}; its text fields: "
                                     f"{', '.join(text_fields(fields)) or 'none'}")
