"""The rerank APIs the service speaks, as functions from a request body to an answer: validation of
what a client sends (4xx :class:`RequestError` with the reason), scoring through the batcher, and the
answer's JSON shape.

- Cohere/Jina (``POST /v1/rerank``): ``{"query", "documents", "top_n", "return_documents", "raw_scores"}``.
- Cohere v2 (``POST /v2/rerank``, what the cohere SDK's ``ClientV2`` and LangChain's Cohere reranker send):
  ``{"model", "query", "documents", "top_n", "max_tokens_per_doc", "priority"}``, documents as strings
  only → ``{"id", "results": [{"index", "relevance_score"}], "meta": {"api_version": {"version": "2"}}}``.
- Text-Embeddings-Inference (``POST /rerank``): ``{"query", "texts", "raw_scores", "return_text",
  "truncate"}``; as TEI, ``truncate`` false (its default) refuses a text longer than the model's
  ``max_length`` tokens with 413 instead of scoring its start.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from esrerank_errors import RequestError

from .batching import DynamicBatcher


@dataclass(frozen=True)
class ServiceConfig:
    """max_body_bytes: 8 MiB. max_docs: documents per request (1,000). max_text_chars: characters of
    one query or document (100,000; longer texts would be truncated to max_length tokens anyway)."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_docs: int = 1000
    max_text_chars: int = 100_000




def json_score(value) -> float:
    """A score as a JSON number every engine reads as a double: the most precise decimal whose text has
    at most 18 characters (sign, point and exponent included), always with a point or an exponent
    (``json`` writes ``1.0``, not ``1``, for a float). json-smart, the parser behind ML Commons'
    JSONPath, reads a longer decimal as a BigDecimal and an integer as an Integer; the Cohere
    post-processing then fails casting it to Double. A float32 logit needs 9 significant digits, so
    it comes back as the same float32."""
    value = float(value)
    for digits in range(17, 0, -1):
        candidate = float(f"{value:.{digits}g}")
        if len(repr(candidate)) <= MAX_NUMBER_CHARS:
            return candidate
    return candidate


MAX_NUMBER_CHARS = 18  # json-smart's JSONParserBase.extractFloat: longer texts become BigDecimal


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _text(value, what: str, limits: ServiceConfig) -> str:
    if isinstance(value, dict):  # Cohere accepts {"text": ...} documents
        value = value.get("text")
    if not isinstance(value, str):
        raise RequestError(422, f"{what} must be a string")
    if len(value) > limits.max_text_chars:
        raise RequestError(413, f"{what} has {len(value)} characters; the limit is {limits.max_text_chars}")
    return value


def _documents(body: dict, key: str, limits: ServiceConfig) -> list[str]:
    documents = body.get(key)
    if not isinstance(documents, list):
        raise RequestError(422, f"'{key}' must be a list of strings")
    if len(documents) > limits.max_docs:
        raise RequestError(413, f"{len(documents)} documents; the limit is {limits.max_docs} per request")
    return [_text(d, f"{key}[{i}]", limits) for i, d in enumerate(documents)]


def _scores(batcher: DynamicBatcher, query: str, documents: list[str], raw: bool) -> np.ndarray:
    """Each document's score against ``query``: logits when ``raw``, else probabilities (sigmoid)."""
    logits = batcher.score([(query, d) for d in documents]) if documents else np.zeros(0)
    return logits.astype(np.float64) if raw else _sigmoid(logits)


def _flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(422, f"'{key}' must be true or false")
    return value


def handle_cohere(body: dict, batcher: DynamicBatcher, limits: ServiceConfig) -> dict:
    query = _text(body.get("query"), "'query'", limits)
    documents = _documents(body, "documents", limits)
    top_n = _non_negative_int(body, "top_n", None)  # absent or null: every document
    scores = _scores(batcher, query, documents, raw=_flag(body, "raw_scores", False))
    order = np.argsort(-scores, kind="stable")[: len(documents) if top_n is None else top_n]
    results = []
    for i in order:
        entry = {"index": int(i), "relevance_score": json_score(scores[i])}
        if body.get("return_documents"):
            entry["document"] = {"text": documents[i]}
        results.append(entry)
    return {"results": results}


def _non_negative_int(body: dict, key: str, default, positive: bool = False):
    value = body.get(key, default)
    if value is default:
        return value
    if not isinstance(value, int) or isinstance(value, bool) or value < (1 if positive else 0):
        raise RequestError(422, f"'{key}' must be a {'positive' if positive else 'non-negative'} integer")
    return value


def _cut_to_tokens(model, texts: list[str], max_tokens: int) -> list[str]:
    """The start of each text that is ``max_tokens`` of the model's tokens (Cohere's ``max_tokens_per_doc``),
    cut at the end of the last whole token so the text sent on is the client's own, not a decoding of it."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise RequestError(422, "'max_tokens_per_doc' needs a model with a fast tokenizer; this one has none")
    if not texts:
        return texts
    offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [text if len(spans) <= max_tokens else text[: spans[max_tokens - 1][1]]
            for text, spans in zip(texts, offsets)]


def handle_cohere_v2(body: dict, batcher: DynamicBatcher, limits: ServiceConfig) -> dict:
    """Cohere's v2 rerank. ``model`` must be a string, as Cohere requires, but the service answers with the
    one model it serves. ``relevant_spans`` is refused (not computed here); ``priority`` is accepted and has
    no effect (every request is batched in arrival order)."""
    model = body.get("model")
    if not isinstance(model, str):
        raise RequestError(422, "'model' must be a string (the service answers with the model it serves)")
    query = _text(body.get("query"), "'query'", limits)
    documents = body.get("documents")
    if isinstance(documents, list) and any(not isinstance(d, str) for d in documents):
        raise RequestError(422, "'documents' must be a list of strings in v2 (use /v1/rerank for objects)")
    documents = _documents(body, "documents", limits)
    top_n = _non_negative_int(body, "top_n", None)
    max_tokens = _non_negative_int(body, "max_tokens_per_doc", None, positive=True)
    _non_negative_int(body, "priority", None)
    spans = body.get("relevant_spans")
    if spans is not None and not (isinstance(spans, dict) and spans.get("mode") == "disabled"):
        raise RequestError(422, "'relevant_spans' is not supported by esrerank serve (only mode 'disabled')")
    if max_tokens is not None:
        documents = _cut_to_tokens(batcher.model, documents, max_tokens)
    scores = _scores(batcher, query, documents, raw=False)
    order = np.argsort(-scores, kind="stable")[: len(documents) if top_n is None else top_n]
    return {"id": str(uuid.uuid4()),
            "results": [{"index": int(i), "relevance_score": json_score(scores[i])} for i in order],
            "meta": {"api_version": {"version": "2"}}}


def _refuse_truncation(model, query: str, texts: list[str]) -> None:
    """TEI's ``truncate: false``: a (query, text) pair longer than the model reads is refused, not cut."""
    tokenizer, max_length = getattr(model, "tokenizer", None), getattr(model, "max_length", None)
    if tokenizer is None or max_length is None or getattr(getattr(model, "passages", None), "mode", "") == "maxp":
        return  # MaxP reads a long text whole, window by window: nothing is cut
    lengths = [len(ids) for ids in tokenizer([query] * len(texts), texts, truncation=False)["input_ids"]]
    for i, length in enumerate(lengths):
        if length > max_length:
            raise RequestError(413, f"texts[{i}] and the query are {length} tokens; the model reads at most "
                                    f"{max_length} (send \"truncate\": true to score the start)")


def handle_tei(body: dict, batcher: DynamicBatcher, limits: ServiceConfig) -> list:
    query = _text(body.get("query"), "'query'", limits)
    texts = _documents(body, "texts", limits)
    if not _flag(body, "truncate", False):
        _refuse_truncation(batcher.model, query, texts)
    scores = _scores(batcher, query, texts, raw=bool(body.get("raw_scores")))
    order = np.argsort(-scores, kind="stable")
    results = []
    for i in order:
        entry = {"index": int(i), "score": json_score(scores[i])}
        if body.get("return_text"):
            entry["text"] = texts[i]
        results.append(entry)
    return results


ROUTES = {"/v1/rerank": handle_cohere, "/v2/rerank": handle_cohere_v2, "/rerank": handle_tei}
