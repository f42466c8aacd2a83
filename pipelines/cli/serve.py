"""``esrerank serve``: rerank over HTTP (Cohere/Jina and TEI APIs)."""

from __future__ import annotations

import signal

from rerank import DEFAULT_MODEL

from .options import (
    add_model_run_args,
    cross_encoder_from,
    non_negative_float,
    port_number,
    positive_int,
    read_api_key,
)


def add_parser(commands, common) -> None:
    parser = commands.add_parser("serve", parents=[common], allow_abbrev=False,
                                 help="rerank over HTTP (Cohere/Jina and TEI APIs)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"cross-encoder hub id or folder (default {DEFAULT_MODEL})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_number, default=8080)
    parser.add_argument("--gather-tokens", type=positive_int, default=65_536,
                        help="gather queued requests up to about this many tokens per model call (default 65,536)")
    parser.add_argument("--max-docs", type=positive_int, default=1000, help="documents per request (default 1,000)")
    parser.add_argument("--max-wait-ms", type=non_negative_float, default=5.0,
                        help="longest a request waits for others to batch with (default 5; 0 turns batching off)")
    parser.add_argument("--api-key-file", help="file holding the API key requests must send as 'Authorization: "
                        "Bearer <key>' (default: $ESRERANK_API_KEY, else no key). Never "
                        "on the command line, where other users of the machine see it. This service's key, not "
                        "an engine's (--engine-api-key-file of the engine commands)")
    add_model_run_args(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rerank.service import RerankService, ServiceConfig

    api_key = read_api_key(args.api_key_file)
    model = cross_encoder_from(args)
    service = RerankService(model, host=args.host, port=args.port, gather_tokens=args.gather_tokens,
                            max_wait_ms=args.max_wait_ms, limits=ServiceConfig(max_docs=args.max_docs),
                            model_name=args.model, api_key=api_key)
    print(f"esrerank serving {args.model} on {service.url} (POST /v1/rerank, POST /rerank, GET /health, GET /metrics; "
          f"{'API key required' if api_key else 'no API key'})", flush=True)
    # SIGTERM (docker stop, systemd, kill) stops the service as Ctrl-C does: the listening socket is
    # closed and the model worker joined, exit status 0. As PID 1 in a container, without a handler
    # SIGTERM would be ignored until the runtime kills the process.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
