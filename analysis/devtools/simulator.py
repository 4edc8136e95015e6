"""A local stand-in for the Hugging Face Hub API and the HF router, driven by scenarios.

Every test and the offline demo talk real HTTP to this server on loopback.  The
behaviour follows the upstream facts in DESIGN.md: cursor pagination through
``Link`` headers with a page-size cap, ``RateLimit`` 429s, list- and dict-shaped
provider mappings, error bodies in the providers' own shapes (OpenAI-style
objects, plain strings, TGI, text), ``Retry-After``, HTML 502s, bad JSON,
connection resets, SSE streams, 401 for a wrong token, 410 for a retired API,
and the account-level answers: providers switched off in the account's settings
and a token without the Inference Providers permission.  A behaviour can depend
on the request (``accepts``), so that a re-probe with other settings can answer
where the first probe was refused.

The server is a small asyncio HTTP/1.1 implementation rather than an ASGI app
under uvicorn: ASGI hides the transport, so faults such as a TCP reset with no
answer, a connection closed mid-body or a body that stalls after its headers
cannot be produced through it.  It is also cheap enough per request that the
throughput benchmark measures the prober, not the simulator.

Mounts (path prefixes) on one server:

``/api/models``, ``/api/models/{id}``
    the Hub API.
``/v1/models``, ``/v1/chat/completions``
    the router.
``/retired/v1/...``
    a retired API: every request answers 410 (the seed incident).
``/nocredits/v1/...``
    chat completions answer 402.
``/wrongpath/v1/...``
    a wrong endpoint that answers 404 to every chat completion.
``/noproviders/v1/...``
    an account with every provider switched off: every chat completion answers
    400 ``model_not_supported`` ("not supported by any provider you have enabled");
    ``/models`` lists models as the router does.
``/noperm/v1/...``
    a token without the Inference Providers permission: every chat completion
    answers 403 ("does not have sufficient permissions to call Inference Providers").
``/openai/v1/...``
    an OpenAI-compatible gateway: bare model ids, no provider suffixes.
``/_sim/stats``, ``/_sim/reset``, ``/_sim/phase``
    counters for tests (peak concurrency, attempts per model, the request
    variants sent per model, SSE streams still being sent) and scenario phases.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import math
import random
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

__all__ = [
    "Scenario",
    "SimulatorServer",
    "default_scenario",
    "load_scenario",
    "synthetic_scenario",
    "serve",
]

DATA_FILE = "hf-provider-mappings-2025-07-15.json"
CHAT_TASK = "conversational"
# Large enough to be a "long" stall for any sane probe timeout, small enough that a
# forgotten connection does not keep a test server alive for long.
STALL_SECONDS = 120.0


# --------------------------------------------------------------------------- scenario


@dataclass
class Scenario:
    """Everything the simulator serves: Hub settings, router settings and models.

    ``models`` is a list of dicts with the Hub fields (``id``, ``pipeline_tag``,
    ``tags``, ``library_name``, ``gated``, ``downloads``, ``likes``, ``createdAt``,
    ``lastModified``), ``providers`` (a list of ``{provider, providerId, status,
    task, latency_ms}``), optional ``router_listed`` (bool; default: listed when a
    live chat mapping exists) and optional ``routes``: behaviours keyed by
    ``"bare"``, a provider name or ``"*"``.  A behaviour is a dict with ``kind``
    (``chat``, ``error``, ``html``, ``reset``, ``close_mid_body``, ``stall``,
    ``slow``, ``bad_json``, ``not_chat``, ``empty_choices``, ``empty_reply``, ``echo_auth``,
    ``oversized``, ``invalid_utf8``, ``sse_body``, ``reasoning_reply``,
    ``bad_encoding``) and, by kind, ``status``, ``code``, ``message``, ``type``,
    ``param``, ``retry_after``, ``latency_ms`` (``echo_auth`` echoes the
    Authorization header in an error body).  An ``error`` has a ``shape``:
    ``object`` (default, OpenAI-style; ``param``/``code`` may be null), ``string``
    (``{"error": message}``), ``tgi`` (``{"error": message, "error_type":
    "validation"}``) or ``text`` (text/plain); ``extra`` fields are merged into the
    top level of a JSON shape.  ``reasoning_reply`` answers empty ``content``
    (``""``, or the behaviour's ``content``) with ``reasoning_content`` (or
    ``reasoning`` when ``field: "reasoning"``) and ``finish_reason: "length"``;
    ``sse_body`` streams chat chunks even for ``stream: false``; ``bad_encoding``
    declares ``Content-Encoding: gzip`` over a body that is not gzip.

    Which behaviour applies: ``times: N`` applies it to the first N attempts
    only, after which ``then`` (default: a chat answer) applies; otherwise, when
    the request meets every predicate of ``accepts`` (``min_budget``,
    ``max_budget``, ``stream``, ``param``, ``content_parts``: see
    :func:`_request_accepted`), ``then`` applies.  A chat answer to a request
    with ``stream: true`` is an SSE stream of ``stream_chunks`` content chunks
    (default 4) ``stream_chunk_delay_ms`` apart (default 0); both are read from
    the behaviour, then from ``router``.  ``phases`` maps a phase number to a
    partial model that overrides the base from that phase on (``{"removed":
    true}`` drops it).

    ``router`` settings: ``latency_scale``, ``max_latency_ms``, ``echo_auth``, ``set_cookie``
    (every chat answer sets this cookie; ``cookies_seen`` counts requests that sent one back),
    ``stream_chunks``, ``stream_chunk_delay_ms``, and the account's provider
    settings ``enabled_providers`` / ``disabled_providers`` (lists): a call to a
    provider the account has off, or to a model none of whose providers is on, is
    refused with 400 ``model_not_supported`` before any per-model behaviour.

    Opt-in ``router`` settings for scale and tail tests (absent: unchanged behaviour):
    ``rate_limits`` maps a route (a provider name, or ``"bare"``) to requests per
    second; above it the route answers 429 with no ``Retry-After`` (a token bucket
    holding one second of requests, as API gateways do).  ``latency`` replaces every
    chat answer's latency with a draw from a distribution: ``{"dist": "lognormal",
    "median_ms": 1000, "p99_ms": 20000, "seed": 1}`` (deterministic per model string
    and attempt; scaled by ``latency_scale``).  ``never_answer`` (``{"fraction":
    0.02, "per": "request" | "model", "seed": 1}``) makes that share of requests (or of
    models, on every attempt) never answer: the connection stays open, silent.
    """

    name: str = "custom"
    description: str = ""
    token: str | None = None
    hub: dict[str, Any] = field(default_factory=dict)
    router: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    provider_order: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scenario":
        known = {"name", "description", "token", "hub", "router", "models", "provider_order"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown scenario keys: {sorted(unknown)}")
        if not isinstance(data.get("models", []), list):
            raise ValueError("scenario 'models' must be a list")
        for model in data.get("models", []):
            if not isinstance(model, dict) or not isinstance(model.get("id"), str):
                raise ValueError("every scenario model needs a string 'id'")
        return cls(**copy.deepcopy(data))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "token": self.token,
            "hub": self.hub,
            "router": self.router,
            "provider_order": self.provider_order,
            "models": self.models,
        }


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return Scenario.from_dict(json.load(fh))


_VISION_ID = re.compile(r"vision|(?<![a-z])vl(?![a-z])", re.IGNORECASE)


def _read_capture() -> dict[str, Any]:
    text = resources.files("analysis.devtools.data").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def _pipeline_tag_for(model_id: str) -> str:
    # The capture has no pipeline tags; its README says ids with Vision/VL are
    # image-text-to-text and the others are chat text-generation models.
    if _VISION_ID.search(model_id.split("/")[-1]):
        return "image-text-to-text"
    return "text-generation"


def _stable_int(text: str, low: int, high: int) -> int:
    # Deterministic pseudo-random figures (downloads, likes) so the sample is reproducible.
    rng = random.Random(text)
    return rng.randint(low, high)


# Extra hf-inference models around the real capture, one or more per taxonomy row.
# Ids are real Hub repositories; their behaviours are the cases the product must
# explain.  Arch-Router is the seed incident: chat-capable, served by hf-inference,
# refused only when called without the provider suffix.
_EXTRA_MODELS: list[dict[str, Any]] = [
    {
        "id": "katanemo/Arch-Router-1.5B",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "safetensors", "qwen2", "text-generation", "routing", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 900}],
        "routes": {"bare": {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model",
                            "message": "The requested model 'katanemo/Arch-Router-1.5B' is not supported by any provider you have enabled."}},
        "note": "seed incident: works as :hf-inference, refused as a bare id",
    },
    {
        "id": "BAAI/bge-small-en-v1.5",
        "pipeline_tag": "feature-extraction",
        "library_name": "sentence-transformers",
        "tags": ["sentence-transformers", "feature-extraction", "embeddings"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": "feature-extraction", "latency_ms": 120}],
        "note": "embedding model: not a chat model",
    },
    {
        "id": "facebook/bart-large-cnn",
        "pipeline_tag": "summarization",
        "library_name": "transformers",
        "tags": ["transformers", "summarization"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": "summarization", "latency_ms": 400}],
        "note": "summarization model: not a chat model",
    },
    {
        "id": "openai-community/gpt2",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "gpt2", "text-generation"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": "text-generation", "latency_ms": 150}],
        "note": "text-generation tag, but the mapping task is plain text-generation, not conversational",
    },
    {
        "id": "meta-llama/Llama-Guard-3-1B",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "gated": "manual",
        "tags": ["transformers", "llama", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 300}],
        "routes": {"*": {"kind": "error", "status": 403, "code": "gated_repo",
                         "message": "Access to model meta-llama/Llama-Guard-3-1B is restricted. You must have access to it and be authenticated."}},
        "note": "gated on evidence: the 403 says access is restricted (the token has not accepted the licence)",
    },
    {
        "id": "HuggingFaceH4/zephyr-7b-beta",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "mistral", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 700}],
        "routes": {"*": {"kind": "error", "status": 404, "code": "model_not_found",
                         "message": "Model HuggingFaceH4/zephyr-7b-beta does not exist"}},
        "note": "catalog says live, router says 404: conflicting evidence",
    },
    {
        "id": "Qwen/Qwen2.5-1.5B-Instruct",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "qwen2", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 500}],
        "routes": {"*": {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model",
                         "message": "The requested model 'Qwen/Qwen2.5-1.5B-Instruct' is not supported by any provider you have enabled."}},
        "note": "refused with model_not_supported although mapped live",
    },
    {
        "id": "microsoft/Phi-3-mini-4k-instruct",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "phi3", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "staging", "task": CHAT_TASK, "latency_ms": 600}],
        "note": "mapping still in staging",
    },
    {
        "id": "Qwen/Qwen3-0.6B",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "qwen3", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 800}],
        "routes": {"*": {"kind": "error", "status": 400, "code": "invalid_request_error", "param": "max_tokens",
                         "message": "max_tokens is too small for a reasoning model: the budget is used up while thinking",
                         "accepts": {"min_budget": 256}}},
        "note": "reasoning model refusing a tiny max_tokens budget, answering a large one: probe_error",
    },
    {
        "id": "google/gemma-3-1b-it",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "gemma3_text", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 300}],
        "routes": {"*": {"kind": "error", "status": 429, "code": "rate_limit_exceeded", "message": "Rate limit reached"}},
        "note": "always 429, without Retry-After",
    },
    {
        "id": "tiiuae/falcon-7b-instruct",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "falcon", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 2000}],
        "routes": {"*": {"kind": "slow"}},
        "note": "never answers in time",
    },
    {
        "id": "mistralai/Mistral-7B-Instruct-v0.2",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "mistral", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 600}],
        "routes": {"*": {"kind": "html", "status": 502}},
        "note": "HTML 502 from the provider, every time",
    },
    {
        "id": "bigscience/bloomz-560m",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "bloom", "text-generation"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 200}],
        "routes": {"*": {"kind": "reset"}},
        "note": "connection reset, no HTTP answer",
    },
    {
        "id": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "llama", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 200}],
        "routes": {"*": {"kind": "not_chat"}},
        "note": "200, but the body is a text-generation list, not a chat completion",
    },
    {
        "id": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "llama", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 300}],
        "routes": {"*": {"kind": "error", "status": 503, "message": "Service Unavailable", "retry_after": 0.05, "times": 1}},
        "note": "one 503 with Retry-After, then fine: a retry saves it",
    },
    {
        "id": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "qwen2", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 400}],
        "routes": {"*": {"kind": "error", "status": 500, "type": "server_error", "message": "Internal server error"}},
        "phases": {"1": {"routes": {}}},
        "note": "JSON 500 in phase 0, recovers in phase 1",
    },
    {
        "id": "google/gemma-2-27b-it",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "gemma2", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "error", "task": CHAT_TASK, "latency_ms": 900}],
        "note": "mapping in error state: the router refuses it",
    },
    {
        "id": "mistralai/Mistral-Large-Instruct-2407",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "gated": "auto",
        "tags": ["transformers", "mistral", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 900}],
        "routes": {"*": {"kind": "error", "status": 404, "code": "model_not_found",
                         "message": "Model mistralai/Mistral-Large-Instruct-2407 does not exist"}},
        "note": "gated in the catalog and refused with 404: catalog gated alone is not evidence "
                "(repo gating does not apply to Inference Providers), so not_found",
    },
    {
        "id": "sentence-transformers/all-MiniLM-L6-v2",
        "pipeline_tag": "sentence-similarity",
        "library_name": "sentence-transformers",
        "tags": ["sentence-transformers", "feature-extraction", "sentence-similarity"],
        "providers": [{"provider": "hf-inference", "status": "error", "task": "feature-extraction", "latency_ms": 80}],
        "note": "non-chat tag and a mapping in error: non_chat_task wins",
    },
    {
        "id": "ibm-granite/granite-3.3-2b-instruct",
        "library_name": "transformers",
        "tags": ["transformers", "granite"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 500}],
        "routes": {"*": {"kind": "error", "status": 404, "code": "model_not_found",
                         "message": "Model ibm-granite/granite-3.3-2b-instruct does not exist"}},
        "note": "no pipeline tag, refused with 404: nothing explains it, so not_found",
    },
    {
        "id": "Qwen/Qwen2.5-0.5B-Instruct",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "qwen2", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 300}],
        "routes": {"*": {"kind": "error", "status": 422, "code": "unprocessable_entity",
                         "message": "Input validation error: the model cannot serve this request"}},
        "note": "422 refusal: not_supported",
    },
    {
        "id": "deepset/roberta-base-squad2",
        "pipeline_tag": "question-answering",
        "library_name": "transformers",
        "tags": ["transformers", "question-answering"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": "question-answering", "latency_ms": 150}],
        "routes": {"*": {"kind": "chat"}},
        "note": "catalog says non-chat, but it answers: ok (catalog facts only explain a refusal)",
    },
    {
        "id": "cross-encoder/ms-marco-MiniLM-L6-v2",
        "pipeline_tag": "text-ranking",
        "library_name": "sentence-transformers",
        "tags": ["sentence-transformers", "text-ranking"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": "text-ranking", "latency_ms": 100}],
        "routes": {"*": {"kind": "slow"}},
        "note": "non-chat model that times out: timeout, with a note",
    },
    # Version 2 of the taxonomy: refusals of our request that a changed re-probe answers,
    # refusals no change fixes, temporary unavailability in any status, and odd 200s.
    {
        "id": "HuggingFaceTB/SmolLM2-360M-Instruct",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "llama", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 200}],
        "routes": {"*": {"kind": "error", "status": 422, "shape": "tgi",
                         "message": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 12. "
                                    "Given: 10 `inputs` tokens and 16 `max_new_tokens`",
                         "accepts": {"max_budget": 2}}},
        "note": "TGI budget refusal stating its limit; a budget inside it answers: probe_error",
    },
    {
        "id": "Qwen/Qwen3-1.7B",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "qwen3", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 500}],
        "routes": {"*": {"kind": "error", "status": 400, "param": None, "code": None,
                         "message": "This model only support stream mode, please enable the stream parameter.",
                         "accepts": {"stream": True}}},
        "note": "stream-only model: refuses stream=false, answers stream=true: probe_error",
    },
    {
        "id": "openai/gpt-oss-20b",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "gpt_oss", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 700}],
        "routes": {"*": {"kind": "error", "status": 400, "param": "max_tokens", "code": "unsupported_parameter",
                         "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                    "Use 'max_completion_tokens' instead.",
                         "accepts": {"param": "max_completion_tokens"}}},
        "note": "wants max_completion_tokens instead of max_tokens: probe_error",
    },
    {
        "id": "Qwen/QwQ-32B-AWQ",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "qwen2", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 900}],
        "routes": {"*": {"kind": "error", "status": 400, "param": "max_tokens", "code": None,
                         "message": "max_tokens must be at least 1024 for this model"}},
        "note": "names max_tokens, but every re-probe is refused too: falls through to not_supported",
    },
    {
        "id": "HuggingFaceH4/starchat2-15b-v0.1",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "mistral", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 800}],
        "routes": {"*": {"kind": "error", "status": 400,
                         "message": "The endpoint is paused, ask a maintainer to restart it"}},
        "note": "paused endpoint, answered as a 400: temporary, upstream_error",
    },
    {
        "id": "bigscience/bloom-1b1",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "bloom", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 300}],
        "routes": {"*": {"kind": "error", "status": 503, "shape": "string",
                         "message": "Model bigscience/bloom-1b1 is currently loading",
                         "extra": {"estimated_time": 20.0}}},
        "note": "503 currently loading, with estimated_time: temporary, upstream_error",
    },
    {
        "id": "NousResearch/Hermes-3-Llama-3.1-8B",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "llama", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 600}],
        "routes": {"*": {"kind": "sse_body"}},
        "note": "answers an SSE stream of chat chunks although stream=false was sent: ok, with a note",
    },
    {
        "id": "microsoft/Phi-4-mini-reasoning",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "phi3", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 600}],
        "routes": {"*": {"kind": "reasoning_reply"}},
        "note": "empty content with reasoning_content and finish_reason length: ok (the budget went on thinking)",
    },
    {
        "id": "01-ai/Yi-1.5-9B-Chat",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "llama", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 500}],
        "routes": {"*": {"kind": "error", "status": 429, "code": "rate_limit_exceeded", "message": "Rate limit reached",
                         "retry_after": 86400}},
        "note": "429 with Retry-After: 86400, far beyond any cap: stop at once, rate_limited",
    },
    {
        "id": "upstage/SOLAR-10.7B-Instruct-v1.0",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "llama", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 700}],
        "routes": {"*": {"kind": "error", "status": 424, "type": "server_error", "message": "Failed Dependency"}},
        "note": "424 from the provider: upstream_error",
    },
    {
        "id": "lmsys/vicuna-7b-v1.5",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "llama", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 600}],
        "routes": {"*": {"kind": "error", "status": 408, "type": "timeout", "message": "Request Timeout"}},
        "note": "408 from the provider: timeout",
    },
    {
        "id": "Nexusflow/Starling-LM-7B-beta",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["transformers", "mistral", "text-generation", "conversational"],
        "providers": [{"provider": "hf-inference", "status": "live", "task": CHAT_TASK, "latency_ms": 600}],
        "routes": {"*": {"kind": "error", "status": 401, "shape": "string",
                         "message": "Invalid credentials in Authorization header"}},
        "note": "401 for this one model while the canaries answer: a provider credential bug, upstream_error",
    },
]


def default_scenario() -> Scenario:
    """The built-in scenario: the real 2025-07-15 provider table plus one case per reason.

    Real mappings keep their model ids, providers, live/error states and measured
    latencies (scaled by the router's ``latency_scale``).  Error-state mappings are
    refused by the router, as a provider that has dropped a model would be.
    """
    capture = _read_capture()
    by_id: dict[str, dict[str, Any]] = {}
    for row in capture["mappings"]:
        model = by_id.setdefault(row["model_id"], {
            "id": row["model_id"],
            "pipeline_tag": _pipeline_tag_for(row["model_id"]),
            "library_name": "transformers",
            "tags": ["transformers", _pipeline_tag_for(row["model_id"]), "conversational"],
            "gated": False,
            "providers": [],
        })
        model["providers"].append({
            "provider": row["provider"],
            "providerId": row["model_id"].split("/")[-1].lower(),
            "status": row["status"],
            "task": CHAT_TASK,
            "latency_ms": row["request_latency_ms"],
        })
    models = list(by_id.values()) + copy.deepcopy(_EXTRA_MODELS)
    for model in models:
        if model.get("routes") and model["id"] != "katanemo/Arch-Router-1.5B":
            # Fault cases stay out of the most-downloaded few, which a scan takes as its canaries.
            model.setdefault("downloads", _stable_int(model["id"] + "d", 100, 20_000))
        model.setdefault("gated", False)
        model.setdefault("downloads", _stable_int(model["id"] + "d", 1_000, 5_000_000))
        model.setdefault("likes", _stable_int(model["id"] + "l", 0, 5_000))
        model.setdefault("createdAt", f"2024-{_stable_int(model['id'], 1, 12):02d}-15T10:00:00.000Z")
        model.setdefault("lastModified", "2025-07-01T12:00:00.000Z")
        for mapping in model["providers"]:
            mapping.setdefault("providerId", model["id"])
    provider_order = list(capture["provider_order"])
    return Scenario(
        name="default",
        description="HF inference-provider table captured 2025-07-15, plus one case per taxonomy reason on hf-inference",
        hub={"page_cap": 25, "rate_limit_pages": [1], "rate_limit_reset": 1},
        router={"latency_scale": 0.01, "max_latency_ms": 1500},
        models=models,
        provider_order=provider_order,
    )


def synthetic_scenario(n_models: int, latency_ms: float, provider: str = "hf-inference",
                       page_cap: int = 1000) -> Scenario:
    """``n_models`` healthy chat models on one provider with a fixed latency (benchmarks)."""
    models = [{
        "id": f"bench-org/model-{i:06d}",
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "tags": ["text-generation", "conversational"],
        "gated": False,
        "downloads": n_models - i,
        "likes": 0,
        "createdAt": "2025-01-01T00:00:00.000Z",
        "lastModified": "2025-01-01T00:00:00.000Z",
        "providers": [{"provider": provider, "status": "live", "task": CHAT_TASK, "latency_ms": latency_ms}],
    } for i in range(n_models)]
    return Scenario(
        name=f"synthetic-{n_models}",
        description=f"{n_models} healthy models at {latency_ms} ms",
        hub={"page_cap": page_cap},
        router={"latency_scale": 1.0},
        models=models,
        provider_order=[provider],
    )


# --------------------------------------------------------------------------- HTTP core


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    base_url: str

    def param(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return default

    def params(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    fault: str | None = None  # "reset", "close_mid_body" or "stall"
    # A streamed body (SSE): each event goes out as one HTTP chunk, ``event_delay`` seconds
    # apart, so a client can read the first event long before the last one is sent.
    events: list[bytes] | None = None
    event_delay: float = 0.0


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            410: "Gone", 422: "Unprocessable Entity", 424: "Failed Dependency", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), headers or [])


def _router_error(status: int, message: str, type_: str = "invalid_request_error",
                  code: str | None = None, param: str | None = None,
                  headers: list[tuple[str, str]] | None = None) -> Response:
    return _json(status, {"error": {"message": message, "type": type_, "param": param, "code": code}}, headers)


class _Protocol:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, app: "SimulatorApp", base_url: str) -> None:
        self.app = app
        self.base_url = base_url

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        carry = b""  # a byte read while watching for the client going away
        try:
            while True:
                try:
                    head = carry + await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                carry = b""
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _version = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                parts = urlsplit(target)
                request = Request(method.upper(), unquote(parts.path), parse_qsl(parts.query, keep_blank_values=True),
                                  headers, body, self.base_url)
                # A client that gives up (timeout) closes its connection: stop serving it, so the
                # in-flight counter measures what clients really have open.  The peer's FIN only
                # shows on the reader (the transport stays half-open), hence the read.
                dispatch = asyncio.ensure_future(self.app.dispatch(request))
                watch = asyncio.ensure_future(reader.read(1))
                await asyncio.wait({dispatch, watch}, return_when=asyncio.FIRST_COMPLETED)
                if not dispatch.done():
                    if watch.exception() is not None or watch.result() == b"":
                        dispatch.cancel()
                        await asyncio.gather(dispatch, return_exceptions=True)
                        return
                    await dispatch  # a pipelined request arrived: finish this one first
                if watch.done():
                    if watch.exception() is not None:
                        return
                    carry = watch.result()
                else:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
                response = dispatch.result()
                keep_alive = headers.get("connection", "").lower() != "close"
                if response.events is not None:
                    # A streamed body ends the connection: watching for the client going away
                    # while streaming would otherwise swallow the start of a pipelined request.
                    await self._write_events(reader, writer, response)
                    return
                if not await self._write(writer, response, keep_alive):
                    return
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # client went away, or the server is shutting down
        finally:
            try:
                writer.close()
            except RuntimeError:  # loop already closing
                pass

    async def _write(self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool) -> bool:
        if response.fault == "reset":
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                import socket
                import struct
                # SO_LINGER with a zero timeout makes close() send an RST, not a FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return False
        reason = _REASONS.get(response.status, "Status")
        declared = len(response.body)
        if response.fault == "close_mid_body":
            declared = len(response.body) * 2 + 100
        head = [f"HTTP/1.1 {response.status} {reason}",
                f"Content-Type: {response.content_type}",
                f"Content-Length: {declared}"]
        head += [f"{k}: {v}" for k, v in response.headers]
        head.append("Connection: keep-alive" if keep_alive else "Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if response.fault in ("close_mid_body", "stall"):
            writer.write(response.body[: max(1, len(response.body) // 2)])
            await writer.drain()
            if response.fault == "stall":
                await asyncio.sleep(STALL_SECONDS)
            writer.transport.abort()
            return False
        writer.write(response.body)
        await writer.drain()
        return True

    async def _write_events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            response: Response) -> None:
        """Send a chunked SSE body, stopping as soon as the client closes its end.

        A client that has what it needs (the first chunk) closes the connection; the
        server must then stop at once, without waiting out the delays or writing into
        a closed socket.
        """
        head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}",
                f"Content-Type: {response.content_type}",
                "Transfer-Encoding: chunked",
                "Cache-Control: no-cache"]
        head += [f"{k}: {v}" for k, v in response.headers]
        head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        gone = asyncio.ensure_future(reader.read(1))  # EOF (b"") once the client closes
        with self.app.lock:
            self.app.open_streams += 1
        try:
            for index, event in enumerate(response.events or ()):
                if index and response.event_delay > 0:
                    if gone.done():  # bytes of a pipelined request: nothing left to watch
                        await asyncio.sleep(response.event_delay)
                    else:
                        await asyncio.wait({gone}, timeout=response.event_delay)
                if gone.done() and (gone.exception() is not None or gone.result() == b""):
                    return
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            with self.app.lock:
                self.app.open_streams -= 1
            gone.cancel()
            await asyncio.gather(gone, return_exceptions=True)


# --------------------------------------------------------------------------- the app


class SimulatorApp:
    """Routes requests to the Hub and router handlers and keeps counters."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.phase = 0
        self.lock = threading.Lock()
        self.reset_stats()
        self._index()

    # -- state

    def reset_stats(self) -> None:
        self.in_flight = 0
        self.peak_in_flight = 0
        self.connections = 0  # connections accepted (a keep-alive client opens one per worker)
        self.rate_limited: dict[str, int] = {}  # route -> 429s answered by router.rate_limits
        self.chat_by_route: dict[str, int] = {}  # route -> chat requests
        self.never_answered = 0
        # route -> (tokens, last refill time) of the router.rate_limits token buckets
        self.buckets: dict[str, tuple[float, float]] = {}
        self.open_streams = 0  # SSE bodies being sent right now (a client still reading)
        self.chat_requests = 0
        self.cookies_seen = 0  # chat requests that carried a Cookie header
        self.attempts: dict[str, int] = {}
        self.hub_requests = 0
        self.hub_pages_served = 0
        self.hub_429s = 0
        self.rate_limited_pages: set[int] = set()
        self.fault_once_done: set[str] = set()
        self.auth_headers_seen: set[str] = set()
        # model string -> the request variants sent, so tests can check what a re-probe changed
        self.requests: dict[str, list[dict[str, Any]]] = {}

    def _index(self) -> None:
        self.models: list[dict[str, Any]] = []
        for base in self.scenario.models:
            model = copy.deepcopy(base)
            for phase_key in sorted(base.get("phases", {}), key=int):
                if int(phase_key) <= self.phase:
                    model.update(copy.deepcopy(base["phases"][phase_key]))
            model.pop("phases", None)
            if not model.get("removed"):
                self.models.append(model)
        self.by_id = {m["id"]: m for m in self.models}
        self.known_providers = set(self.scenario.provider_order) | {
            m["provider"] for x in self.models for m in x.get("providers", [])}
        self._selections: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}

    def set_phase(self, phase: int) -> None:
        self.phase = phase
        self._index()
        self.attempts.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "peak_in_flight": self.peak_in_flight,
            "in_flight": self.in_flight,
            "connections": self.connections,
            "rate_limited": dict(self.rate_limited),
            "chat_by_route": dict(self.chat_by_route),
            "never_answered": self.never_answered,
            "open_streams": self.open_streams,
            "chat_requests": self.chat_requests,
            "cookies_seen": self.cookies_seen,
            "attempts": dict(self.attempts),
            "hub_requests": self.hub_requests,
            "hub_pages_served": self.hub_pages_served,
            "hub_429s": self.hub_429s,
            "requests": {model: [dict(variant) for variant in sent] for model, sent in self.requests.items()},
        }

    # -- dispatch

    async def dispatch(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sim/"):
            return self._admin(request)
        if path == "/api/models" or path.startswith("/api/models/"):
            return self._hub(request)
        for mount in ("", "/retired", "/nocredits", "/wrongpath", "/noproviders", "/noperm", "/openai"):
            if path.startswith(mount + "/v1/"):
                return await self._router(request, mount.strip("/"), path[len(mount) + 4:])
        if path.startswith("/retired/"):
            return self._retired()
        return _json(404, {"error": "Not Found"})

    def _admin(self, request: Request) -> Response:
        if request.path == "/_sim/stats":
            return _json(200, self.stats())
        if request.path == "/_sim/reset":
            self.reset_stats()
            return _json(200, {"ok": True})
        if request.path == "/_sim/phase":
            self.set_phase(int(request.param("n", "0") or 0))
            return _json(200, {"phase": self.phase})
        return _json(404, {"error": "unknown admin path"})

    # -- auth

    def _token_ok(self, request: Request, required: bool) -> bool:
        expected = self.scenario.token
        header = request.headers.get("authorization")
        if header:
            self.auth_headers_seen.add(header)
        if expected is None:
            return True
        if header is None:
            return not required
        return header == f"Bearer {expected}"

    @staticmethod
    def _unauthorized(request: Request, echo: bool) -> Response:
        message = "Invalid credentials in Authorization header"
        if echo:  # a careless server that repeats what it was sent
            message += f": {request.headers.get('authorization', '(none)')}"
        return _json(401, {"error": message})

    # -- Hub

    def _hub(self, request: Request) -> Response:
        self.hub_requests += 1
        hub = self.scenario.hub
        if not self._token_ok(request, required=False):
            return self._unauthorized(request, hub.get("echo_auth", False))
        if request.path.startswith("/api/models/"):
            return self._hub_model(request.path[len("/api/models/"):])
        cursor = request.param("cursor")
        page_index, offset = self._decode_cursor(cursor) if cursor else (0, 0)
        if page_index < 0:
            return _json(400, {"error": "Invalid cursor"})
        if page_index in hub.get("rate_limit_pages", []) and page_index not in self.rate_limited_pages:
            self.rate_limited_pages.add(page_index)
            self.hub_429s += 1
            reset = hub.get("rate_limit_reset", 1)
            return _json(429, {"error": "You have exceeded our rate limit for the 'api' resource"},
                         [("RateLimit", f'"api";r=0;t={reset}'), ("RateLimit-Policy", '"fixed window";"api";q=1000;w=300')])
        page_faults = {int(k): v for k, v in hub.get("page_faults", {}).items()}
        fault = page_faults.get(page_index)
        fault_key = f"hub:{page_index}:{fault}"
        if fault in ("500_once", "truncated_once", "html200_once") and fault_key not in self.fault_once_done:
            self.fault_once_done.add(fault_key)
            fault = fault.removesuffix("_once")
        elif fault and fault.endswith("_once"):
            fault = None
        if fault == "500":
            return _json(500, {"error": "Internal Error"})
        provider = request.param("inference_provider")
        if provider is not None:
            wanted = {p.strip() for p in provider.split(",") if p.strip()}
            if "all" not in wanted and not wanted <= self.known_providers:
                known = self.known_providers
                bad = ", ".join(sorted(wanted - known))
                return _json(400, {"error": f"Invalid inference provider: {bad}"})
        selected = self._selection(request)
        limit = int(request.param("limit", "1000") or 1000)
        size = max(1, min(limit, int(hub.get("page_cap", 1000))))
        page = selected[offset: offset + size]
        self.hub_pages_served += 1
        expand = request.params("expand") + request.params("expand[]")
        items = [self._hub_entry(m, expand, list_shape=True) for m in page]
        body = json.dumps(items).encode()
        headers: list[tuple[str, str]] = []
        next_offset = offset + size
        if next_offset < len(selected) or fault == "stuck":
            next_index = page_index + 1
            base = request.base_url
            if fault == "loop":  # the next link points back to a page already served
                next_index, next_offset = max(0, page_index - 1), max(0, offset - size)
            elif fault == "stuck":  # a fresh cursor every time, for the same models
                next_offset = offset
            elif fault == "foreign":  # the next page on another host
                base = base.replace("127.0.0.1", "localhost")
            params = [(k, v) for k, v in request.query if k != "cursor"]
            params.append(("cursor", self._encode_cursor(next_index, next_offset)))
            headers.append(("Link", f'<{base}/api/models?{urlencode(params)}>; rel="next"'))
        if fault == "truncated":
            body = body[: max(1, len(body) // 2)]
        elif fault == "html200":
            return Response(200, b"<!DOCTYPE html><html><head><title>Hugging Face - We'll be back</title></head>"
                                 b"<body>Maintenance</body></html>", headers, content_type="text/html")
        return Response(200, body, headers)

    @staticmethod
    def _encode_cursor(page_index: int, offset: int) -> str:
        raw = json.dumps({"p": page_index, "o": offset}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_cursor(cursor: str) -> tuple[int, int]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            data = json.loads(raw)
            return int(data["p"]), int(data["o"])
        except (ValueError, KeyError, TypeError):
            return -1, 0

    def _selection(self, request: Request) -> list[dict[str, Any]]:
        """The models a query selects, in order; cached per query (minus the cursor), so paging
        a 100,000-model catalog costs the simulator one filter, not one per page."""
        key = tuple(sorted((k, v) for k, v in request.query if k != "cursor"))
        selected = self._selections.get(key)
        if selected is None:
            selected = [m for m in self.models if self._hub_matches(m, request)]
            sort = request.param("sort")
            if sort in ("downloads", "likes", "createdAt", "lastModified"):
                selected.sort(key=lambda m: m.get(sort) or 0, reverse=True)
            self._selections[key] = selected
        return selected

    def _hub_matches(self, model: dict[str, Any], request: Request) -> bool:
        provider = request.param("inference_provider")
        if provider is not None:
            wanted = {p.strip() for p in provider.split(",") if p.strip()}
            mapped = {m["provider"] for m in model.get("providers", [])}
            if "all" in wanted:
                if not mapped:
                    return False
            elif not (wanted & mapped):
                return False
        tag = request.param("pipeline_tag")
        if tag is not None and model.get("pipeline_tag") != tag:
            return False
        author = request.param("author")
        if author is not None and model["id"].split("/")[0] != author:
            return False
        search = request.param("search")
        if search is not None and search.lower() not in model["id"].lower():
            return False
        for tag_filter in request.params("filter"):
            if tag_filter not in model.get("tags", []):
                return False
        return True

    def _hub_entry(self, model: dict[str, Any], expand: list[str], list_shape: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"_id": hashlib.sha1(model["id"].encode("utf-8", "surrogatepass")).hexdigest()[:24], "id": model["id"]}
        base_fields = ["likes", "downloads", "tags", "pipeline_tag", "library_name", "createdAt"]
        fields = expand if expand else base_fields
        for name in fields:
            if name == "inferenceProviderMapping":
                continue
            if name in model and model[name] is not None:
                entry[name] = model[name]
        if "pipeline_tag" in fields and model.get("pipeline_tag") is None:
            entry.pop("pipeline_tag", None)
        shape = self.scenario.hub.get("mapping_shape", "list")
        if "inferenceProviderMapping" in expand and shape != "missing":
            mappings = [{"provider": m["provider"], "providerId": m.get("providerId", model["id"]),
                         "status": m["status"], "task": m.get("task", CHAT_TASK)}
                        for m in model.get("providers", [])]
            if list_shape and shape == "list":
                entry["inferenceProviderMapping"] = mappings
            else:
                entry["inferenceProviderMapping"] = {m.pop("provider"): m for m in mappings}
        return entry

    def _hub_model(self, model_id: str) -> Response:
        model = self.by_id.get(model_id)
        if model is None:
            return Response(404, json.dumps({"error": "Repository not found"}).encode(),
                            [("X-Error-Code", "RepoNotFound")])
        fields = ["pipeline_tag", "tags", "library_name", "gated", "downloads", "likes", "createdAt",
                  "lastModified", "inferenceProviderMapping"]
        return _json(200, self._hub_entry(model, fields, list_shape=False))

    # -- router

    def _retired(self) -> Response:
        return _json(410, {"error": "The requested API endpoint api-inference.huggingface.co is no longer supported. "
                                    "Please use router.huggingface.co/hf-inference instead."})

    async def _router(self, request: Request, mount: str, sub: str) -> Response:
        if mount == "retired":
            return self._retired()
        if not self._token_ok(request, required=True):
            return self._unauthorized(request, self.scenario.router.get("echo_auth", False))
        if sub == "models" and request.method == "GET":
            return self._router_models(openai=mount == "openai")
        if sub != "chat/completions":
            return _json(404, {"error": "Not Found"})
        if request.method != "POST":
            return _json(405, {"error": "Method Not Allowed"})
        if mount == "nocredits":
            return _router_error(402, "You have exceeded your monthly included credits for Inference Providers.",
                                 "billing_error", "insufficient_quota")
        with self.lock:
            self.in_flight += 1
            self.chat_requests += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if "cookie" in request.headers:
            with self.lock:
                self.cookies_seen += 1
        try:
            response = await self._chat(request, mount)
        finally:
            with self.lock:
                self.in_flight -= 1
        cookie = self.scenario.router.get("set_cookie")
        if cookie:
            response.headers.append(("Set-Cookie", str(cookie)))
        return response

    def _router_models(self, openai: bool) -> Response:
        data = []
        for model in self.models:
            live = [m for m in model.get("providers", []) if m["status"] == "live" and m.get("task", CHAT_TASK) == CHAT_TASK]
            listed = model.get("router_listed")
            if listed is None:
                listed = bool(live)
            if not listed:
                continue
            entry: dict[str, Any] = {"id": model["id"], "object": "model", "created": 1_720_000_000,
                                     "owned_by": model["id"].split("/")[0]}
            if not openai:
                entry["providers"] = [{"provider": m["provider"], "status": "live", "context_length": 32768,
                                       "pricing": {"input": 0.1, "output": 0.3}, "supports_tools": False,
                                       "supports_structured_output": False} for m in live]
            data.append(entry)
        return _json(200, {"object": "list", "data": data})

    async def _chat(self, request: Request, mount: str) -> Response:
        try:
            payload = json.loads(request.body or b"{}")
            model_string = str(payload["model"])
            if not isinstance(payload.get("messages"), list):
                raise KeyError("messages")
        except (ValueError, KeyError, TypeError):
            return _router_error(400, "Invalid request body: 'model' and 'messages' are required", param="model")
        with self.lock:
            attempt = self.attempts.get(model_string, 0) + 1
            self.attempts[model_string] = attempt
            self.requests.setdefault(model_string, []).append({
                "max_tokens": payload.get("max_tokens"),
                "max_completion_tokens": payload.get("max_completion_tokens"),
                "stream": payload.get("stream"),
                "content_parts": _has_content_parts(payload),
            })
        model_id, _, route = model_string.partition(":")
        limited = self._over_rate_limit("bare" if mount == "openai" or not route else route)
        if limited is not None:
            return limited
        if mount == "wrongpath":
            return _router_error(404, "Not Found", code="not_found")
        if mount == "noproviders":
            return self._render(_not_enabled(model_id), model_string, payload, request)
        if mount == "noperm":
            return _json(403, {"error": "This authentication method does not have sufficient permissions to call "
                                        "Inference Providers on behalf of user sim-user"})
        model = self.by_id.get(model_id)
        if mount == "openai":
            route = "bare"
        if model is None:
            return _router_error(404, f"Model {model_id} does not exist", code="model_not_found", param="model")
        behaviour, latency_ms = self._behaviour(model, route or "bare", attempt, payload)
        scale = float(self.scenario.router.get("latency_scale", 1.0))
        cap = float(self.scenario.router.get("max_latency_ms", 1e9))
        drawn = self._drawn_latency_ms(model_string, attempt)
        if drawn is not None and "latency_ms" not in behaviour:
            latency_ms = drawn
        delay = min(float(behaviour.get("latency_ms", latency_ms or 0)) * scale, cap) / 1000.0
        if self._never_answers(model_string, attempt):
            with self.lock:
                self.never_answered += 1
            await asyncio.sleep(STALL_SECONDS)  # cancelled when the client gives up and closes
        if behaviour.get("kind") == "slow":
            delay = float(behaviour.get("seconds", STALL_SECONDS))
            behaviour = {"kind": "chat"}
        if delay > 0:
            await asyncio.sleep(delay)
        return self._render(behaviour, model_string, payload, request)

    def _over_rate_limit(self, route: str) -> Response | None:
        """A 429 without Retry-After when ``route`` is above its ``router.rate_limits`` rate (token bucket)."""
        with self.lock:
            self.chat_by_route[route] = self.chat_by_route.get(route, 0) + 1
        limits = self.scenario.router.get("rate_limits") or {}
        rate = limits.get(route)
        if rate is None:
            return None
        rate = float(rate)
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(route, (max(1.0, rate), now))
            tokens = min(max(1.0, rate), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self.buckets[route] = (tokens - 1.0, now)
                return None
            self.buckets[route] = (tokens, now)
            self.rate_limited[route] = self.rate_limited.get(route, 0) + 1
        return _router_error(429, "Rate limit reached for requests", "rate_limit_error", "rate_limit_exceeded")

    def _draw(self, name: str, model_string: str, attempt: int) -> random.Random:
        seed = self.scenario.router.get(name, {}).get("seed", 1)
        return random.Random(f"{name}:{seed}:{model_string}:{attempt}")

    def _drawn_latency_ms(self, model_string: str, attempt: int) -> float | None:
        spec = self.scenario.router.get("latency")
        if not spec:
            return None
        if spec.get("dist", "lognormal") != "lognormal":
            raise ValueError(f"unknown latency distribution {spec.get('dist')!r}")
        median = float(spec.get("median_ms", 1000))
        p99 = float(spec.get("p99_ms", median * 20))
        sigma = math.log(p99 / median) / 2.3263478740408408  # the 99th percentile of the standard normal
        return self._draw("latency", model_string, attempt).lognormvariate(math.log(median), sigma)

    def _never_answers(self, model_string: str, attempt: int) -> bool:
        spec = self.scenario.router.get("never_answer")
        if not spec:
            return False
        per_model = spec.get("per", "request") == "model"
        return self._draw("never_answer", model_string, 0 if per_model else attempt).random() < float(
            spec.get("fraction", 0.0))

    def _behaviour(self, model: dict[str, Any], route: str, attempt: int,
                   payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
        providers = {m["provider"]: m for m in model.get("providers", [])}
        routes = model.get("routes", {})
        spec = routes.get(route) or routes.get("*")
        latency = 0.0
        if route in providers:
            latency = float(providers[route].get("latency_ms") or 0)
        elif providers:
            latency = float(next(iter(providers.values())).get("latency_ms") or 0)
        # The account's provider settings act before the model is looked at: the real router
        # refuses a switched-off provider even for a model it serves well.
        if route in _POLICY_ROUTES:
            refused = self._account_limited() and not any(self._provider_enabled(name) for name in providers)
        else:
            refused = not self._provider_enabled(route)
        if refused:
            return _not_enabled(model["id"]), latency
        if spec is not None:
            times = spec.get("times")
            if times is not None and attempt > int(times):
                return spec.get("then", {"kind": "chat"}), latency
            if "accepts" in spec and _request_accepted(spec["accepts"], payload):
                return spec.get("then", {"kind": "chat"}), latency
            return spec, latency
        return self._derived_behaviour(model, route, providers), latency

    def _account_limited(self) -> bool:
        router = self.scenario.router
        return router.get("enabled_providers") is not None or bool(router.get("disabled_providers"))

    def _provider_enabled(self, provider: str) -> bool:
        """Whether the account has ``provider`` switched on (everything is, unless the router says)."""
        enabled = self.scenario.router.get("enabled_providers")
        disabled = self.scenario.router.get("disabled_providers") or []
        return (enabled is None or provider in enabled) and provider not in disabled

    def _derived_behaviour(self, model: dict[str, Any], route: str, providers: dict[str, Any]) -> dict[str, Any]:
        model_id = model["id"]
        if route in _POLICY_ROUTES:
            order = self.scenario.provider_order or sorted(providers)
            for name in order:
                mapping = providers.get(name)
                if mapping and mapping["status"] == "live" and mapping.get("task", CHAT_TASK) == CHAT_TASK \
                        and self._provider_enabled(name):
                    return {"kind": "chat"}
            return _not_enabled(model_id)
        mapping = providers.get(route)
        if mapping is None:
            return {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model",
                    "message": f"The requested model '{model_id}' is not supported by provider '{route}'."}
        if mapping.get("task", CHAT_TASK) != CHAT_TASK:
            return {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model",
                    "message": f"Model '{model_id}' does not support task 'conversational' on provider '{route}' "
                               f"(task: {mapping.get('task')})."}
        if mapping["status"] != "live":
            return {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model",
                    "message": f"The requested model '{model_id}' is not available on provider '{route}' "
                               f"(status: {mapping['status']})."}
        return {"kind": "chat"}

    def _render(self, behaviour: dict[str, Any], model_string: str, payload: dict[str, Any],
                request: Request) -> Response:
        kind = behaviour.get("kind", "chat")
        headers: list[tuple[str, str]] = []
        if behaviour.get("retry_after") is not None:
            headers.append(("Retry-After", str(behaviour["retry_after"])))
        if kind in ("chat", "empty_reply", "reasoning_reply", "sse_body"):
            field_name = "content"
            finish_reason = "stop"
            piece = "" if kind == "empty_reply" else "O"
            message: dict[str, Any] = {"role": "assistant", "content": "OK" if kind == "chat" else ""}
            if kind == "reasoning_reply":
                # The budget went on thinking: no answer yet, only the reasoning, cut at the limit.
                field_name = "reasoning" if behaviour.get("field") == "reasoning" else "reasoning_content"
                finish_reason = "length"
                piece = "think "
                message = {"role": "assistant", "content": behaviour.get("content", ""),
                           field_name: "Okay, the user says hello. I should answer briefly, but first"}
            if kind == "sse_body" or payload.get("stream") is True:
                count = int(self._stream_setting(behaviour, "stream_chunks", 4))
                delay = float(self._stream_setting(behaviour, "stream_chunk_delay_ms", 0)) / 1000.0
                return Response(200, headers=headers, content_type="text/event-stream",
                                events=_chat_events(model_string, field_name, [piece] * count, finish_reason),
                                event_delay=delay)
            return _json(200, {
                "id": "chatcmpl-sim", "object": "chat.completion", "created": int(time.time()), "model": model_string,
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }, headers)
        if kind == "error":
            return _error_response(behaviour, headers)
        if kind == "bad_encoding":
            # Declared gzip, sent plain: a client that trusts the header cannot decode it.
            body = json.dumps({"id": "chatcmpl-sim", "object": "chat.completion", "model": model_string,
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"},
                                            "finish_reason": "stop"}]}).encode()
            return Response(int(behaviour.get("status", 200)), body, headers + [("Content-Encoding", "gzip")])
        if kind == "echo_auth":
            # A careless upstream that echoes the credentials back: the tool must scrub them.
            status = int(behaviour.get("status", 400))
            return _router_error(status, f"bad request from {request.headers.get('authorization', '(none)')}",
                                 code="echo")
        if kind == "html":
            status = int(behaviour.get("status", 502))
            body = (f"<html><head><title>{status} Bad Gateway</title></head><body><center><h1>{status} Bad Gateway"
                    f"</h1></center><hr><center>cloudflare</center></body></html>").encode()
            return Response(status, body, headers, content_type="text/html")
        if kind == "reset":
            return Response(0, fault="reset")
        if kind in ("close_mid_body", "stall"):
            body = json.dumps({"id": "chatcmpl-sim", "object": "chat.completion",
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": "O" * 200}}]}).encode()
            return Response(200, body, fault=kind)
        if kind == "bad_json":
            return Response(200, b'{"id": "chatcmpl-sim", "choices": [{"message": ', headers)
        if kind == "not_chat":
            return _json(200, [{"generated_text": "Hello! How can I help you today?"}], headers)
        if kind == "empty_choices":
            return _json(200, {"id": "chatcmpl-sim", "object": "chat.completion", "model": model_string, "choices": []})
        if kind == "oversized":
            size = int(behaviour.get("size_bytes", 4 * 1024 * 1024))
            filler = "x" * size
            return _json(200, {"id": "chatcmpl-sim", "object": "chat.completion", "model": model_string,
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": filler}}]})
        if kind == "invalid_utf8":
            status = int(behaviour.get("status", 200))
            return Response(status, b'{"error": {"message": "bad \xff\xfe bytes \xc3\x28", "code": "x"}}')
        raise ValueError(f"unknown behaviour kind {kind!r}")

    def _stream_setting(self, behaviour: dict[str, Any], name: str, default: float) -> Any:
        return behaviour.get(name, self.scenario.router.get(name, default))


# Model suffixes that let the router pick the provider, and a bare id, which picks the same way.
_POLICY_ROUTES = ("bare", "fastest", "cheapest")


def _not_enabled(model_id: str) -> dict[str, Any]:
    """The router's refusal when no provider the account has switched on serves ``model_id``."""
    return {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model",
            "message": f"The requested model '{model_id}' is not supported by any provider you have enabled."}


def _error_response(behaviour: dict[str, Any], headers: list[tuple[str, str]]) -> Response:
    """An ``error`` behaviour in the shape its provider would use: providers pass their own through."""
    status = int(behaviour.get("status", 500))
    message = behaviour.get("message", _REASONS.get(status, "error"))
    shape = behaviour.get("shape", "object")
    if shape == "text":
        return Response(status, message.encode(), headers, content_type="text/plain")
    body: dict[str, Any]
    if shape == "object":
        type_ = behaviour.get("type") or ("server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": type_, "param": behaviour.get("param"),
                          "code": behaviour.get("code")}}
    elif shape == "string":
        body = {"error": message}
    elif shape == "tgi":
        body = {"error": message, "error_type": "validation"}
    else:
        raise ValueError(f"unknown error shape {shape!r}")
    body.update(behaviour.get("extra", {}))
    return _json(status, body, headers)


def _chat_events(model_string: str, field_name: str, pieces: list[str], finish_reason: str) -> list[bytes]:
    """SSE events of a streamed chat completion: one delta per piece, the finish, ``[DONE]``."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        data = {"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": created, "model": model_string,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    events = [chunk({"role": "assistant", field_name: piece} if not index else {field_name: piece}, None)
              for index, piece in enumerate(pieces)]
    events.append(chunk({}, finish_reason))
    events.append(b"data: [DONE]\n\n")
    return events


def _budget(payload: dict[str, Any]) -> float | None:
    """The token budget a chat request asks for, under whichever name it uses."""
    for name in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
        value = payload.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


def _has_content_parts(payload: dict[str, Any]) -> bool:
    """Whether every message's ``content`` is a list of typed parts rather than a string."""
    messages = payload.get("messages") or []
    return bool(messages) and all(
        isinstance(message, dict) and isinstance(message.get("content"), list)
        and all(isinstance(part, dict) and "type" in part for part in message["content"])
        for message in messages)


def _request_accepted(accepts: dict[str, Any], payload: dict[str, Any]) -> bool:
    """Whether a chat request meets every predicate of a behaviour's ``accepts``.

    ``min_budget: N`` the budget (``max_tokens``, else ``max_completion_tokens``, else
    ``max_new_tokens``) is at least N; ``max_budget: N`` it is at most N, or absent;
    ``stream: b`` the request's ``stream`` is b; ``param: name`` the request carries
    ``name`` and not ``max_tokens`` (a provider that wants ``max_completion_tokens``;
    a null value counts as absent);
    ``content_parts: b`` every message's content is (b true) or is not a list of parts.
    """
    budget = _budget(payload)
    for name, wanted in accepts.items():
        if name == "min_budget":
            met = budget is not None and budget >= wanted
        elif name == "max_budget":
            met = budget is None or budget <= wanted
        elif name == "stream":
            met = bool(payload.get("stream")) == bool(wanted)
        elif name == "param":
            met = payload.get(wanted) is not None and (wanted == "max_tokens" or payload.get("max_tokens") is None)
        elif name == "content_parts":
            met = _has_content_parts(payload) == bool(wanted)
        else:
            raise ValueError(f"unknown accepts predicate {name!r}")
        if not met:
            return False
    return True


# --------------------------------------------------------------------------- servers


class SimulatorServer:
    """Runs the simulator on loopback in a background thread.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with SimulatorServer(default_scenario()) as sim:
            httpx.get(sim.hub_url + "/api/models")
    """

    def __init__(self, scenario: Scenario | None = None, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = SimulatorApp(scenario or default_scenario())
        self.host = host
        self.port = port
        # With a server TLS context the simulator speaks https, as the real router does (tests of the TLS path).
        self.ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context is not None else 'http'}://{self.host}:{self.port}"

    hub_url = url

    @property
    def router_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> "SimulatorServer":
        self._thread = threading.Thread(target=self._run, name="rca-simulator", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(_start_server(self.app, self.host, self.port,
                                                                       self.ssl_context))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "SimulatorServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _start_server(app: SimulatorApp, host: str, port: int,
                        ssl_context: ssl.SSLContext | None = None) -> asyncio.base_events.Server:
    holder: dict[str, str] = {}

    def factory(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        with app.lock:
            app.connections += 1
        return _Protocol(app, holder["base"]).handle(reader, writer)

    server = await asyncio.start_server(factory, host, port, backlog=1024, ssl=ssl_context)
    real_port = server.sockets[0].getsockname()[1]
    holder["base"] = f"{'https' if ssl_context is not None else 'http'}://{host}:{real_port}"
    return server


def serve(scenario: Scenario, host: str = "127.0.0.1", port: int = 8765,
          on_ready: Any = None) -> None:
    """Serve ``scenario`` in the foreground until interrupted."""

    async def main() -> None:
        server = await _start_server(SimulatorApp(scenario), host, port)
        bound = server.sockets[0].getsockname()[1]
        if on_ready is not None:
            on_ready(f"http://{host}:{bound}")
        async with server:
            await server.serve_forever()

    asyncio.run(main())
