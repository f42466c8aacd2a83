"""Reranking inside the engine: the engine calls ``esrerank serve`` itself.

- OpenSearch (ML Commons + neural-search): a connector to the service's ``/v1/rerank`` (Cohere shape), a
  remote model on it, and a search pipeline whose ``rerank`` response processor rescores every hit a
  search returns (the window is the request's ``size``). :func:`register_opensearch` creates them, or
  finds and reuses them, so running it again changes nothing.
- Elasticsearch: a ``custom`` rerank inference endpoint for the ``text_similarity_reranker`` retriever
  (:func:`register_elasticsearch`). Inference is an Enterprise/trial feature there; on a Basic licence
  esrerank's client-side pipeline (:class:`pipelines.retrieve_rerank.RetrieveRerank`) is the route.

The connector asks the service for raw logits (``"raw_scores": true``): the engines keep scores as
32-bit floats, where sigmoid probabilities near 1 collapse into ties that logits keep apart, so the
engine's order is the cross-encoder's own.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Sequence

from esrerank_errors import EngineError, EnginePermissionError, RegistrationError

logger = logging.getLogger(__name__)

NO_KEY = "no-key"  # ML Commons refuses a connector without a credential; this one is never checked


@dataclass(frozen=True)
class OpenSearchRegistration:
    connector_id: str
    model_id: str
    pipeline: str
    created: tuple[str, ...]  # what this call created (empty when everything already existed)

    def as_json(self) -> str:
        return json.dumps({"connector_id": self.connector_id, "model_id": self.model_id, "pipeline": self.pipeline,
                           "created": list(self.created)})


def rerank_url(service_url: str) -> str:
    """The service's Cohere-style route, from its base URL (or the route itself)."""
    url = service_url.rstrip("/")
    return url if url.endswith("/v1/rerank") else f"{url}/v1/rerank"


def opensearch_connector_body(name: str, service_url: str, api_key: str | None = None, timeout_s: int = 30) -> dict:
    """An ML Commons HTTP connector to the service, in the shape of ML Commons' Cohere rerank blueprint.

    Its built-in Cohere pre-processing fills ``query``, ``documents`` and ``top_n``; its post-processing
    reads ``results[*].index`` and ``results[*].relevance_score`` back in document order.

    timeout_s: how long the engine waits for the service to connect and to answer (default 30 s), so a
        stalled service fails the search instead of hanging it."""
    return {
        "name": name,
        "description": "esrerank cross-encoder through its Cohere-compatible /v1/rerank API",
        "version": "1",
        "protocol": "http",
        "parameters": {},
        "credential": {"api_key": api_key or NO_KEY},
        "client_config": {"connection_timeout": timeout_s, "read_timeout": timeout_s, "max_retry_times": 0},
        "actions": [{
            "action_type": "predict",
            "method": "POST",
            "url": rerank_url(service_url),
            "headers": {"Content-Type": "application/json", "Authorization": "Bearer ${credential.api_key}"},
            "request_body": ('{ "documents": ${parameters.documents}, "query": "${parameters.query}", '
                             '"top_n": ${parameters.top_n}, "raw_scores": true }'),
            "pre_process_function": "connector.pre_process.cohere.rerank",
            "post_process_function": "connector.post_process.cohere.rerank",
        }],
    }


def opensearch_pipeline_body(model_id: str, rerank_fields: Sequence[str], ignore_failure: bool = False) -> dict:
    """A search pipeline with the ``rerank`` response processor. OpenSearch joins ``rerank_fields`` with
    no separator before sending them; one field (the default ``text``) avoids that."""
    processor = {"ml_opensearch": {"model_id": model_id}, "context": {"document_fields": list(rerank_fields)}}
    if ignore_failure:
        processor["ignore_failure"] = True
    return {"description": "esrerank: BM25 hits rescored by the esrerank service",
            "response_processors": [{"rerank": processor}]}


def elasticsearch_endpoint_body(service_url: str, api_key: str | None = None) -> dict:
    """A ``custom`` rerank inference endpoint (Elasticsearch 8.19 / 9.1 on): the service's Cohere body,
    read back with JSONPaths; the API key travels in ``secret_parameters``, which Elasticsearch stores
    encrypted and never returns."""
    settings = {
        "url": rerank_url(service_url),
        "headers": {"Content-Type": "application/json"},
        "request": '{"query": ${query}, "documents": ${input}, "return_documents": false, "raw_scores": true}',
        "response": {"json_parser": {"relevance_score": "$.results[*].relevance_score",
                                     "reranked_index": "$.results[*].index"}},
    }
    if api_key:
        settings["headers"]["Authorization"] = "Bearer ${api_key}"
        settings["secret_parameters"] = {"api_key": api_key}
    return {"service": "custom", "service_settings": settings}


# --- what to tell the user when the engine refuses --------------------------------------------------

_HINTS = (
    ("no handler found for uri [/_plugins/_ml", "the ML Commons plugin (opensearch-ml) is not installed on the engine"),
    ("Invalid processor type rerank", "the neural-search plugin (opensearch-neural-search), which provides the "
                                      "'rerank' processor, is not installed on the engine"),
    ("trusted connector endpoint", "allow the service's URL in the cluster setting "
                                   "plugins.ml_commons.trusted_connector_endpoints_regex"),
    ("private ip", "the service is on a private address: set plugins.ml_commons.connector.private_ip_enabled: true"),
    ("No eligible node", "no ML node: set plugins.ml_commons.only_run_on_ml_node: false on a cluster without "
                         "dedicated ML nodes"),
    ("Memory Circuit Breaker", "ML Commons' memory circuit breaker is open: raise "
                               "plugins.ml_commons.native_memory_threshold / jvm_heap_memory_threshold"),
    ("no handler found for uri [/_inference", "this Elasticsearch has no inference API (the x-pack inference "
                                              "plugin; Maven Central's integ-test build lacks it)"),
    ("current license is non-compliant", "Elasticsearch inference needs an Enterprise or trial licence; on a "
                                         "Basic licence rerank on the client side (esrerank evaluate/search "
                                         "--model)"),
)


# What registering asks of the engine; CI registers with a user holding exactly these
# (tests/pipelines/test_secured_clusters.py).
REGISTER_PRIVILEGES = {
    "opensearch": "cluster permissions cluster:admin/opensearch/ml/* and cluster:admin/search/pipeline/*, and index "
                  "permission read on the --index",
    "elasticsearch": "cluster privilege manage_inference",
}


def explain(step: str, error: EngineError, engine: str | None = None) -> RegistrationError:
    """A one-line error for a refused step, naming the setting or plugin to fix where it is known, or the
    privilege the engine refused and the full list registering needs."""
    message = str(error)
    if isinstance(error, EnginePermissionError) and engine in REGISTER_PRIVILEGES:
        return RegistrationError(f"{step}: {error.message}; registering needs "
                                 f"{REGISTER_PRIVILEGES[engine]}")
    for fragment, hint in _HINTS:
        if fragment.lower() in message.lower():
            return RegistrationError(f"{step}: {hint} ({message[:300]})")
    return RegistrationError(f"{step}: {message[:500]}")


# --- OpenSearch ------------------------------------------------------------------------------------

def _search_ml(rest, kind: str, query: dict) -> list[dict]:
    """Hits of ML Commons' ``connectors``/``models`` search; [] before anything was ever registered."""
    try:
        response = rest.request("POST", f"/_plugins/_ml/{kind}/_search", body={"query": query, "size": 100})
    except EngineError as exc:
        if exc.status == 404 and "index_not_found" in str(exc):
            return []
        raise explain(f"looking for existing {kind}", exc, rest.engine) from None
    return response.get("hits", {}).get("hits", [])


def _call(rest, step: str, method: str, path: str, **request) -> dict:
    """One ML Commons / pipeline request; a refusal becomes a one-line ``RegistrationError`` for ``step``."""
    try:
        return rest.request(method, path, **request)
    except EngineError as exc:
        raise explain(step, exc, rest.engine) from None


def _wait(rest, path: str, state_key: str, done: str, failed: tuple[str, ...], what: str, timeout_s: float) -> dict:
    """Poll ``path`` until its ``state_key`` is ``done`` (returns the record) or one of ``failed``."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = rest.request("GET", path)
        state = record.get(state_key)
        if state == done:
            return record
        if state in failed:
            raise explain(what, EngineError(500, str(record.get("error") or f"{state}; see the engine's log")))
        if time.monotonic() > deadline:
            raise RegistrationError(f"{what}: {path} still {state} after {timeout_s:.0f} s")
        time.sleep(0.2)


def _wait_for_task(rest, task_id: str, what: str, timeout_s: float) -> dict:
    return _wait(rest, f"/_plugins/_ml/tasks/{task_id}", "state", "COMPLETED",
                 ("FAILED", "CANCELLED", "COMPLETED_WITH_ERROR"), what, timeout_s)


def _wait_until_deployed(rest, model_id: str, timeout_s: float) -> None:
    # the deploy task completes before the model's own record says DEPLOYED; a search through the
    # pipeline (or a re-run of the registration) in between would see it deploying
    _wait(rest, f"/_plugins/_ml/models/{model_id}", "model_state", "DEPLOYED", ("DEPLOY_FAILED",),
          "deploying the model", timeout_s)


def register_opensearch(rest, service_url: str, name: str = "esrerank", rerank_fields: Sequence[str] = ("text",),
                        api_key: str | None = None, timeout_s: int = 30, ignore_failure: bool = False,
                        deploy_timeout_s: float = 120.0) -> OpenSearchRegistration:
    """Connector, deployed remote model and search pipeline ``name``; what exists already is reused.

    Args:
        rest: a REST adapter (``retrieval.engine_rest.rest_client("opensearch", url)``).
        service_url: where the engine reaches ``esrerank serve``, e.g. ``http://reranker:8080``.
        name: the connector's, the model's and the search pipeline's name. Default ``esrerank``.
        rerank_fields: ``_source`` fields sent to the service. Default ``("text",)``.
        api_key: the service's API key, stored (encrypted) in the connector's credential. Default none.
        timeout_s: the engine's connect and read timeout for the service. Default 30.
        ignore_failure: when the service fails, return the BM25 order instead of an error. Default False:
            a failed rerank is an error the user sees.
        deploy_timeout_s: how long to wait for the model to deploy. Default 120.
    A connector is matched by name and URL. ML Commons never returns a stored credential, so a changed
    API key needs a new name (or deleting the old connector and model).

    Returns:
        An :class:`OpenSearchRegistration`: connector and model ids, the pipeline's name, and what this
        call created (empty when everything existed already). Refusals raise ``RegistrationError``
        naming the setting or plugin to fix.

    Example::

        from retrieval.engine_rest import rest_client
        from retrieval.engines import OpenSearchBM25

        registration = register_opensearch(rest_client("opensearch", "http://127.0.0.1:9202"),
                                           "http://127.0.0.1:8080", api_key=key)
        reranked = OpenSearchBM25("http://127.0.0.1:9202", "my-index",
                                  search_pipeline=registration.pipeline).search("what is bm25", 20)
    """
    created = []
    body = opensearch_connector_body(name, service_url, api_key, timeout_s)
    connectors = [hit for hit in _search_ml(rest, "connectors", {"term": {"name.keyword": name}})
                  if [a.get("url") for a in hit["_source"].get("actions", [])] == [rerank_url(service_url)]]
    if connectors:
        connector_id = connectors[0]["_id"]
    else:
        connector_id = _call(rest, "creating the connector", "POST", "/_plugins/_ml/connectors/_create",
                             body=body)["connector_id"]
        created.append("connector")

    # matched here, not in the query: ML Commons maps connector_id as text in some versions, keyword in others
    models = [hit for hit in _search_ml(rest, "models", {"term": {"name.keyword": name}})
              if hit["_source"].get("connector_id") == connector_id]
    models.sort(key=lambda hit: hit["_source"].get("model_state") != "DEPLOYED")  # a deployed one first
    if models:
        model_id = models[0]["_id"]
        # the search above lags behind the model's record; GET reads it as it is now
        state = rest.request("GET", f"/_plugins/_ml/models/{model_id}").get("model_state")
        if state not in ("DEPLOYED", "DEPLOYING"):
            task_id = _call(rest, "deploying the model", "POST", f"/_plugins/_ml/models/{model_id}/_deploy")["task_id"]
            _wait_for_task(rest, task_id, "deploying the model", deploy_timeout_s)
            created.append("deployment")
    else:
        answer = _call(rest, "registering the model", "POST", "/_plugins/_ml/models/_register",
                       params={"deploy": "true"}, body={"name": name, "function_name": "remote",
                                                        "connector_id": connector_id,
                                                        "description": "esrerank cross-encoder (remote)"})
        task = _wait_for_task(rest, answer["task_id"], "registering and deploying the model", deploy_timeout_s)
        model_id = answer.get("model_id") or task["model_id"]
        created.append("model")
    _wait_until_deployed(rest, model_id, deploy_timeout_s)

    pipeline = opensearch_pipeline_body(model_id, rerank_fields, ignore_failure)
    try:
        existing = rest.request("GET", f"/_search/pipeline/{name}").get(name)
    except EngineError as exc:
        if exc.status != 404:
            raise explain("reading the search pipeline", exc) from None
        existing = None
    if existing != pipeline:
        _call(rest, "creating the search pipeline", "PUT", f"/_search/pipeline/{name}", body=pipeline)
        created.append("pipeline")
    registration = OpenSearchRegistration(connector_id, model_id, name, tuple(created))
    logger.info("OpenSearch rerank pipeline %s: connector %s, model %s (%s)", name, connector_id, model_id,
                ", ".join(created) + " created" if created else "all reused")
    return registration


# --- Elasticsearch ---------------------------------------------------------------------------------

def register_elasticsearch(rest, service_url: str, name: str = "esrerank", api_key: str | None = None) -> dict:
    """PUT the ``custom`` rerank inference endpoint ``name``; returns Elasticsearch's answer."""
    return _call(rest, "creating the inference endpoint", "PUT", f"/_inference/rerank/{name}",
                 body=elasticsearch_endpoint_body(service_url, api_key))
