"""``esrerank register``: make the engine call ``esrerank serve`` itself."""

from __future__ import annotations

import json

from .options import add_engine_connection_args, engine_connection_from, positive_int, read_api_key


def add_parser(commands, common) -> None:
    parser = commands.add_parser("register", parents=[common], allow_abbrev=False,
                                 help="make the engine call 'esrerank serve' itself (rerank inside the engine)")
    parser.add_argument("engine", choices=["opensearch", "elasticsearch"])
    add_engine_connection_args(parser)
    parser.add_argument("--service-url", required=True,
                        help="where the engine reaches 'esrerank serve', e.g. http://reranker:8080")
    parser.add_argument("--name", default="esrerank",
                        help="connector, model and search pipeline name (OpenSearch) or inference endpoint id "
                        "(Elasticsearch); default esrerank")
    parser.add_argument("--rerank-fields", default=None,
                        help="comma-separated _source fields sent to the reranker (OpenSearch joins several with "
                        "no separator); default: with --index, what 'evaluate' would read from it, else text")
    parser.add_argument("--index", help="OpenSearch: the index the pipeline will search; --rerank-fields are checked "
                        "against its mapping (and chosen from it when not given)")
    parser.add_argument("--api-key-file", help="the esrerank service's API key, which the engine sends to 'esrerank "
                        "serve' (default: $ESRERANK_API_KEY, else none); not a key for the engine itself "
                        "(--engine-api-key-file)")
    parser.add_argument("--timeout-s", type=positive_int, default=30,
                        help="OpenSearch's connect and read timeout for the service (default 30)")
    parser.add_argument("--fallback-to-bm25", action="store_true",
                        help="OpenSearch: when the service fails, return the BM25 order instead of an error")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from retrieval.engine_rest import rest_client

    from ..engine_rerank import register_elasticsearch, register_opensearch

    api_key = read_api_key(args.api_key_file)
    rest = rest_client(args.engine, engine_connection_from(args))
    if args.engine == "opensearch":
        fields = _rerank_fields(args)
        registration = register_opensearch(rest, args.service_url, args.name, fields, api_key=api_key,
                                           timeout_s=args.timeout_s, ignore_failure=args.fallback_to_bm25)
        print(registration.as_json())
    else:
        answer = register_elasticsearch(rest, args.service_url, args.name, api_key=api_key)
        print(json.dumps({"inference_id": answer.get("inference_id", args.name), "task_type": answer.get("task_type")}))
    return 0


def _rerank_fields(args) -> list[str]:
    """The fields named, checked against --index's mapping when one is given; else that index's default."""
    from retrieval.engine_query import parse_fields

    named = list(parse_fields(args.rerank_fields, "--rerank-fields")) if args.rerank_fields is not None else None
    if not args.index:
        return named or ["text"]
    from retrieval.engines import connect

    searcher = connect(args.engine, engine_connection_from(args), args.index, rerank_fields=named)
    searcher.check()  # the index is there and the fields are in its mapping, as for any searcher
    return searcher.reranked_fields()
