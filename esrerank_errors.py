"""Every error esrerank raises for something a user can cause or fix, in one module.

It is a top-level module of its own, importing nothing, because all three packages raise these errors and
``retrieval`` and ``rerank`` must not import each other (nor ``pipelines``). The command line catches
:class:`EsrerankError` once and prints its message on one line; ``exit_status`` says whether the input was
bad (2, as argparse's own errors) or the run failed (1). Programming errors (a wrong type passed by code)
stay Python's own exceptions and end in a traceback, as they should.
"""

from __future__ import annotations


class EsrerankError(Exception):
    """Base class of esrerank's errors. ``exit_status``: 1, a run that failed (server gone, engine refused)."""

    exit_status = 1


# --- bad input: exit status 2 -------------------------------------------------------------------------

class InputError(EsrerankError, ValueError):
    """Bad input: a flag, an argument, a file, a model. ``exit_status`` 2."""

    exit_status = 2


class DataError(InputError):
    """Bad input data. The message names the file, the line (when there is one) and the problem."""

    def __init__(self, path, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ModelError(InputError):
    """The model cannot be used as a one-label cross-encoder; the message says why and where."""


class RequestError(InputError):
    """A request the reranking service answers with a 4xx ``status``."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


# --- a run that failed: exit status 1 ------------------------------------------------------------------

class EngineError(EsrerankError, RuntimeError):
    """The search engine answered with an error; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message  # without the status, for a caller that adds to it
        super().__init__(f"HTTP {status}: {message}")


class EngineUnavailable(EngineError):
    """No answer from the search engine (refused, reset, timed out, TLS failed); ``cause`` says why and, where
    the user can act, what to do (``retrieval.engine_rest.unreachable_reason``)."""

    def __init__(self, url: str, cause: str):
        super().__init__(0, f"cannot reach {url}: {cause}")


class EnginePermissionError(EngineError):
    """The engine refused the user a privilege (HTTP 403): ``privilege`` (an action name such as
    ``indices:admin/mappings/get``, or None when the engine did not say) and ``index`` (or None)."""

    def __init__(self, privilege: str | None, index: str | None, message: str):
        self.privilege = privilege
        self.index = index
        super().__init__(403, message)


class RegistrationError(EsrerankError):
    """The engine refused a registration step; the message names the setting or plugin to fix."""


class IndexingAborted(EsrerankError, RuntimeError):
    """An index load stopped (server gone, interrupted); what was acknowledged is recorded for a re-run."""


class RerankAborted(EsrerankError):
    """A batch-rerank worker stopped (killed, out of memory); its part file and progress are kept."""


class ServiceError(EsrerankError):
    """The reranking service cannot start (e.g. its port is taken)."""
