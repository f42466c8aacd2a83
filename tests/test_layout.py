"""The fixed layout: retrieval and rerank never import each other (rerank may import the one shared
error root, retrieval.errors); neither imports pipelines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    found = {}
    for path in (REPO / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize("package,forbidden,allowed", [
    ("retrieval", ("rerank", "pipelines"), ()),
    ("rerank", ("retrieval", "pipelines"), ("retrieval.errors",)),
])
def test_stages_do_not_import_each_other(package, forbidden, allowed):
    offenders = {path: sorted(name for name in names if name.split(".")[0] in forbidden and name not in allowed)
                 for path, names in _imports(package).items()}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_every_esrerank_error_derives_from_the_one_root():
    from pipelines.engine_rerank import RegistrationError
    from rerank.errors import ModelError, ServiceError
    from rerank.service import RequestError
    from retrieval.engines import EngineError, EngineUnavailable
    from retrieval.errors import EsrerankError
    from retrieval.indexing import IndexingAborted
    from retrieval.records import DataError

    for error in (DataError, EngineError, EngineUnavailable, IndexingAborted, ModelError, ServiceError, RequestError,
                  RegistrationError):
        assert issubclass(error, EsrerankError), error
    assert DataError.exit_status == ModelError.exit_status == 2 and EngineError.exit_status == 1
