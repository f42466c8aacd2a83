"""The ``esrerank`` command line: a thin layer over the Python API, one module per subcommand.

Each subcommand module has ``add_parser(commands, common)`` and ``run(args)``: ``run`` turns flags into a
library call and prints. Anything a user can cause ends in one ``esrerank: error: …`` line: every
esrerank error derives from :class:`esrerank_errors.EsrerankError` and is caught here, once; exit
status 2 for bad input (as argparse's own errors), 1 for a run that failed; a file that cannot be read
or written (an ``OSError``: full disk, permissions) is one line too, with exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from esrerank_errors import EsrerankError

from . import evaluate, index, mine, recipe, register, rerank, search, serve, train

COMMANDS = (evaluate, search, index, mine, train, recipe, rerank, serve, register)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (argparse prints the whole usage first) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    common.add_argument("--data-dir", metavar="DIR",
                        help="local folder of named collections (a BEIR folder per name), searched before "
                        "$ESRERANK_DATA_DIR and the shared/data folder beside the checkout")
    parser = Parser(prog="esrerank", description="BM25 retrieval + cross-encoder reranking.",
                                     parents=[common], allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("elastic_transport", "opensearch", "urllib3", "httpx"):  # one line per HTTP request
        logging.getLogger(noisy).setLevel(logging.ERROR)  # esrerank reports what failed
    # --insecure is warned about once, by esrerank; urllib3 would repeat it for every request
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    try:
        return args.handler(args)
    except EsrerankError as error:  # anything a user can cause: one line, 2 for bad input, 1 for a failed run
        print(f"esrerank: error: {' '.join(str(error).split())}", file=sys.stderr)
        return error.exit_status
    except (ConnectionError, TimeoutError):  # network failures are wrapped as EngineError where they matter
        raise
    except OSError as error:
        # a file or folder that cannot be read or written (full disk, permissions, a folder where a file
        # belongs): the system's own words, and the path where the system gives it, on one line
        logging.getLogger("esrerank").debug("the OSError in full", exc_info=True)  # a bug shows with -v/DEBUG
        where = f"{error.filename}: " if error.filename else ""
        print(f"esrerank: error: {' '.join(f'{where}{error.strerror or error}'.split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("esrerank: interrupted", file=sys.stderr)
        return 130
