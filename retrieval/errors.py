"""The root of every error esrerank raises for something a user can cause or fix.

It lives here, with no imports, because the first stage is the lowest layer: ``rerank`` and ``pipelines``
derive their errors from it too (``rerank`` imports this module and nothing else of ``retrieval``). The
command line catches :class:`EsrerankError` once and prints one line; ``exit_status`` says whether the
input was bad (2) or the run failed (1).
"""


class EsrerankError(Exception):
    """Base class of esrerank's errors. ``exit_status``: 1, a run that failed (server gone, engine refused)."""

    exit_status = 1


class InputError(EsrerankError, ValueError):
    """Bad input: a flag, a file, a model. ``exit_status`` 2, as argparse's own errors."""

    exit_status = 2
