"""The fixed layout: retrieval and rerank never import each other, and neither imports pipelines. All three
share one errors module, the top-level esrerank_errors, which imports nothing."""

from __future__ import annotations

import ast
import builtins
import inspect
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


@pytest.mark.parametrize("package,forbidden", [
    ("retrieval", ("rerank", "pipelines")),
    ("rerank", ("retrieval", "pipelines")),
])
def test_stages_do_not_import_each_other(package, forbidden):
    offenders = {path: sorted(name for name in names if name.split(".")[0] in forbidden)
                 for path, names in _imports(package).items()}
    assert {path: names for path, names in offenders.items() if names} == {}


@pytest.mark.parametrize("package", ["retrieval", "rerank", "pipelines"])
def test_every_package_takes_its_errors_from_the_one_module(package):
    """esrerank_errors is what all three import; no package keeps an errors module or an error class."""
    assert any("esrerank_errors" in names for names in _imports(package).values()), package
    assert not (REPO / package / "errors.py").exists()
    exceptions = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}
    errors = exceptions | {name for name, value in _error_classes()}
    defined = []
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(base).split(".")[-1] in errors
                                                      for base in node.bases):
                defined.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert defined == []


def test_the_errors_module_imports_nothing():
    tree = ast.parse((REPO / "esrerank_errors.py").read_text())
    imported = [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert imported == ["from __future__ import annotations"]


def _error_classes():
    import esrerank_errors

    return [(name, value) for name, value in vars(esrerank_errors).items()
            if inspect.isclass(value) and issubclass(value, BaseException)]


def test_every_esrerank_error_derives_from_the_one_root():
    from esrerank_errors import (
        DataError,
        EngineError,
        EnginePermissionError,
        EngineUnavailable,
        EsrerankError,
        IndexingAborted,
        InputError,
        ModelError,
        RegistrationError,
        RequestError,
        RerankAborted,
        ServiceError,
    )

    classes = dict(_error_classes())
    assert set(classes) == {"EsrerankError", "InputError", "DataError", "ModelError", "RequestError", "EngineError",
                            "EngineUnavailable", "EnginePermissionError", "RegistrationError", "IndexingAborted", "RerankAborted",
                            "ServiceError"}
    for error in classes.values():
        assert issubclass(error, EsrerankError), error
    # bad input (2) is a ValueError, so callers catching ValueError keep working; a failed run is 1
    for error in (InputError, DataError, ModelError, RequestError):
        assert error.exit_status == 2 and issubclass(error, ValueError), error
    for error in (EngineError, EngineUnavailable, EnginePermissionError, RegistrationError, IndexingAborted,
                  RerankAborted, ServiceError):
        assert error.exit_status == 1 and not issubclass(error, InputError), error
    assert issubclass(EngineUnavailable, EngineError)
    assert str(DataError("corpus.jsonl", "malformed JSON", line=3)) == "corpus.jsonl:3: malformed JSON"
    assert str(EngineUnavailable("http://h:1", "[Errno 111] Connection refused")) == (
        "HTTP 0: cannot reach http://h:1: [Errno 111] Connection refused")
    assert issubclass(EnginePermissionError, EngineError) and EnginePermissionError("p", "i", "m").status == 403
