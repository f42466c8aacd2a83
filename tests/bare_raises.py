"""Count the bare raises of Python's own exceptions in the library (retrieval/, rerank/, pipelines/).

Usage::

    python tests/bare_raises.py            # the working tree
    python tests/bare_raises.py --rev REV  # a commit, read with git show (e.g. 84149f4, before issue 26)
    python tests/bare_raises.py --user     # only those a user can reach

Every ``raise X(...)`` (or ``raise X``) of a builtin exception class (``ValueError``, ``KeyError``,
``TypeError``, ``RuntimeError``, ``IndexError``, ``FileNotFoundError``, ...) is printed as
``path:line: kind Exception (where): message`` and counted. ``raise error`` of a variable, re-raises and
esrerank's own errors (``esrerank_errors``) are not bare and not counted.

What is "user-reachable" is a judgement, written down here so that it can be argued with:

* **user**: a raise that a user of the command line *or of the Python API* reaches by giving a bad value:
  a flag or argument value out of range or not one of the choices, a file or data that is wrong (empty,
  duplicate ids, missing text for a doc id), a combination of options that does not go together, an
  engine answer that does not match what was asked. These should be :mod:`esrerank_errors` classes
  (``InputError`` / ``DataError`` for bad input, ``EngineError`` for a run that failed), whose one-line
  message the CLI prints instead of a traceback.
* **guard**: a programming error, which stays Python's own exception and ends in a traceback: a wrong
  *type* handed over by code (a string where a list belongs), an internal invariant that no public input
  reaches (a tensor shape inside the model, a length mismatch between two arrays the library builds
  itself), or a protocol's own exception (``IndexError`` of a sequence, ``AttributeError`` of a
  module's ``__getattr__``, ``KeyboardInterrupt`` raised to stop a server on a signal). Each is listed in
  ``GUARDS`` below, keyed by the enclosing function's qualified name and the exception, with the reason.

Anything not in ``GUARDS`` counts as user-reachable, so a new bare raise fails
``tests/test_bare_raises.py`` until it is either converted or argued into the list.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import subprocess
import sys
from pathlib import Path

PACKAGES = ("retrieval", "rerank", "pipelines")
REPO = Path(__file__).resolve().parents[1]
BUILTIN_ERRORS = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}

# (qualified name of the enclosing function, exception) -> why it is a programming error
GUARDS = {
    # wrong types handed over by code
    ("CrossEncoder.rank", "TypeError"): "documents given as one string instead of a list: a caller's type error",
    ("_validate_pairs", "TypeError"): "pairs given as one string instead of a list: a caller's type error",
    ("InMemoryBM25.__init__", "TypeError"): "a path given where an iterable of documents belongs (the message "
                                            "names open_corpus): a caller's type error",
    ("_as_document", "TypeError"): "a corpus row that is neither a dict nor a Document: a caller's type error",
    ("as_connection", "TypeError"): "an engine connection that is neither an EngineConnection nor a URL string: a "
                                    "caller's type error",
    ("InMemoryBM25._check_queries", "TypeError"): "one string given where a list of queries belongs",
    ("SearchEngineBM25.search_many", "TypeError"): "one string given where a list of queries belongs",
    # internal invariants no public input reaches
    ("FirstTokenLayer.forward", "ValueError"): "an attention mask shape transformers never passes",
    ("StringStore.copy_to", "ValueError"): "an in-memory store copied to a file; the library only copies stores "
                                           "it loaded from files",
    # protocols
    ("*", "NotImplementedError"): "an abstract method a subclass overrides",
    ("StringStore.__getitem__", "IndexError"): "the sequence protocol's own exception",
    ("__getattr__", "AttributeError"): "the module __getattr__ protocol's own exception",
    ("_interrupt", "KeyboardInterrupt"): "raised on SIGTERM to stop the server the way Ctrl-C does",
}


def _sources(rev: str | None):
    if rev is None:
        for package in PACKAGES:
            for path in sorted((REPO / package).rglob("*.py")):
                yield str(path.relative_to(REPO)), path.read_text()
        return
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", rev, *PACKAGES],
                           check=True, capture_output=True, text=True).stdout.split()
    for name in sorted(n for n in names if n.endswith(".py")):
        yield name, subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{name}"], check=True,
                                   capture_output=True, text=True).stdout


class _Finder(ast.NodeVisitor):
    def __init__(self, path: str, source: str):
        self.path, self.source, self.scope, self.found = path, source, [], []

    def _scoped(self, node, name):
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_ClassDef(self, node):
        self._scoped(node, node.name)

    def visit_FunctionDef(self, node):
        self.scope.append(node.name)
        self.scope.append("<locals>")
        self.generic_visit(node)
        del self.scope[-2:]

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Raise(self, node):
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id in BUILTIN_ERRORS:
            qualname = ".".join(self.scope[:-1] if self.scope[-1:] == ["<locals>"] else self.scope) or "<module>"
            message = ""
            if isinstance(node.exc, ast.Call) and node.exc.args:
                message = " ".join((ast.get_source_segment(self.source, node.exc.args[0]) or "").split())
            self.found.append((self.path, node.lineno, exc.id, qualname, message))
        self.generic_visit(node)


def bare_raises(rev: str | None = None) -> list[tuple[str, int, str, str, str, str | None]]:
    """(path, line, exception, qualified name, message source, guard reason or None) of every bare raise."""
    rows = []
    for path, source in _sources(rev):
        finder = _Finder(path, source)
        finder.visit(ast.parse(source, path))
        for path_, line, exc, qualname, message in finder.found:
            short = qualname.rsplit(".<locals>.", 1)[-1]
            reason = GUARDS.get((qualname, exc)) or GUARDS.get((short, exc)) or GUARDS.get(("*", exc))
            rows.append((path_, line, exc, qualname, message, reason))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", help="a git revision to read instead of the working tree")
    parser.add_argument("--user", action="store_true", help="list only the user-reachable raises")
    args = parser.parse_args(argv)
    rows = bare_raises(args.rev)
    for path, line, exc, qualname, message, reason in rows:
        if args.user and reason:
            continue
        kind = f"guard ({reason})" if reason else "USER"
        print(f"{path}:{line}: {kind} {exc} in {qualname}: {message[:110]}")
    user = [row for row in rows if row[5] is None]
    classic = {"ValueError", "KeyError", "TypeError", "RuntimeError"}
    print(f"\n{len(rows)} bare raises of builtin exceptions, {sum(r[2] in classic for r in rows)} of them "
          f"ValueError/KeyError/TypeError/RuntimeError; {len(rows) - len(user)} programming-error guards")
    by_file = {}
    for row in user:
        by_file[row[0]] = by_file.get(row[0], 0) + 1
    print(f"user-reachable: {len(user)}  ({', '.join(f'{k} {v}' for k, v in sorted(by_file.items())) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
