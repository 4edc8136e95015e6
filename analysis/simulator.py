"""A local stand-in for the Hugging Face Hub API and the HF router, driven by scenarios.

Every test and the offline demo talk real HTTP to this server on loopback.  The
behaviour follows the upstream facts in DESIGN.md: cursor pagination through
``Link`` headers with a page-size cap, ``RateLimit`` 429s, list- and dict-shaped
provider mappings, OpenAI-style error bodies, ``Retry-After``, HTML 502s, bad
JSON, connection resets, 401 for a wrong token and 410 for a retired API.

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
``/openai/v1/...``
    an OpenAI-compatible gateway: bare model ids, no provider suffixes.
``/_sim/stats``, ``/_sim/reset``, ``/_sim/phase``
    counters for tests (peak concurrency, attempts per model) and scenario phases.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import random
import re
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
    ``oversized``, ``invalid_utf8``) and, by kind, ``status``, ``code``,
    ``message``, ``type``, ``param``, ``retry_after``, ``latency_ms`` (``echo_auth``
    echoes the Authorization header in an error body); ``times: N``
    applies it to the first N attempts only, after which ``then`` (default: a
    chat answer) applies.  ``phases`` maps a phase number to a partial model that
    overrides the base from that phase on (``{"removed": true}`` drops it).
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
    text = resources.files("analysis.data").joinpath(DATA_FILE).read_text(encoding="utf-8")
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
        "note": "gated: the token has not accepted the licence",
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
                         "message": "max_tokens is too small for a reasoning model: the budget is used up while thinking"}},
        "note": "reasoning model refusing a tiny max_tokens budget: the probe's fault",
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
        "note": "gated in the catalog and refused with 404: gated beats not_found",
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


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 410: "Gone",
            422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


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
        self.chat_requests = 0
        self.attempts: dict[str, int] = {}
        self.hub_requests = 0
        self.hub_pages_served = 0
        self.hub_429s = 0
        self.rate_limited_pages: set[int] = set()
        self.fault_once_done: set[str] = set()
        self.auth_headers_seen: set[str] = set()

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
            "chat_requests": self.chat_requests,
            "attempts": dict(self.attempts),
            "hub_requests": self.hub_requests,
            "hub_pages_served": self.hub_pages_served,
            "hub_429s": self.hub_429s,
        }

    # -- dispatch

    async def dispatch(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sim/"):
            return self._admin(request)
        if path == "/api/models" or path.startswith("/api/models/"):
            return self._hub(request)
        for mount in ("", "/retired", "/nocredits", "/wrongpath", "/openai"):
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
        entry: dict[str, Any] = {"_id": hashlib.sha1(model["id"].encode()).hexdigest()[:24], "id": model["id"]}
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
        try:
            return await self._chat(request, mount)
        finally:
            with self.lock:
                self.in_flight -= 1

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
        if mount == "wrongpath":
            return _router_error(404, "Not Found", code="not_found")
        model_id, _, route = model_string.partition(":")
        model = self.by_id.get(model_id)
        if mount == "openai":
            route = "bare"
        if model is None:
            return _router_error(404, f"Model {model_id} does not exist", code="model_not_found", param="model")
        behaviour, latency_ms = self._behaviour(model, route or "bare", attempt)
        scale = float(self.scenario.router.get("latency_scale", 1.0))
        cap = float(self.scenario.router.get("max_latency_ms", 1e9))
        delay = min(float(behaviour.get("latency_ms", latency_ms or 0)) * scale, cap) / 1000.0
        if behaviour.get("kind") == "slow":
            delay = float(behaviour.get("seconds", STALL_SECONDS))
            behaviour = {"kind": "chat"}
        if delay > 0:
            await asyncio.sleep(delay)
        return self._render(behaviour, model_string, request)

    def _behaviour(self, model: dict[str, Any], route: str, attempt: int) -> tuple[dict[str, Any], float]:
        providers = {m["provider"]: m for m in model.get("providers", [])}
        routes = model.get("routes", {})
        spec = routes.get(route) or routes.get("*")
        latency = 0.0
        if route in providers:
            latency = float(providers[route].get("latency_ms") or 0)
        elif providers:
            latency = float(next(iter(providers.values())).get("latency_ms") or 0)
        if spec is not None:
            times = spec.get("times")
            if times is not None and attempt > int(times):
                return spec.get("then", {"kind": "chat"}), latency
            return spec, latency
        return self._derived_behaviour(model, route, providers), latency

    def _derived_behaviour(self, model: dict[str, Any], route: str, providers: dict[str, Any]) -> dict[str, Any]:
        model_id = model["id"]
        if route in ("fastest", "cheapest", "bare"):
            enabled = self.scenario.router.get("enabled_providers")
            order = self.scenario.provider_order or sorted(providers)
            for name in order:
                mapping = providers.get(name)
                if mapping and mapping["status"] == "live" and mapping.get("task", CHAT_TASK) == CHAT_TASK \
                        and (enabled is None or name in enabled):
                    return {"kind": "chat"}
            return {"kind": "error", "status": 400, "code": "model_not_supported", "param": "model",
                    "message": f"The requested model '{model_id}' is not supported by any provider you have enabled."}
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

    @staticmethod
    def _render(behaviour: dict[str, Any], model_string: str, request: Request) -> Response:
        kind = behaviour.get("kind", "chat")
        headers: list[tuple[str, str]] = []
        if behaviour.get("retry_after") is not None:
            headers.append(("Retry-After", str(behaviour["retry_after"])))
        if kind in ("chat", "empty_reply"):
            content = "" if kind == "empty_reply" else "OK"
            return _json(200, {
                "id": "chatcmpl-sim", "object": "chat.completion", "created": int(time.time()), "model": model_string,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }, headers)
        if kind == "error":
            status = int(behaviour.get("status", 500))
            type_ = behaviour.get("type") or ("server_error" if status >= 500 else "invalid_request_error")
            return _router_error(status, behaviour.get("message", _REASONS.get(status, "error")), type_,
                                 behaviour.get("code"), behaviour.get("param"), headers)
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


# --------------------------------------------------------------------------- servers


class SimulatorServer:
    """Runs the simulator on loopback in a background thread.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with SimulatorServer(default_scenario()) as sim:
            httpx.get(sim.hub_url + "/api/models")
    """

    def __init__(self, scenario: Scenario | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = SimulatorApp(scenario or default_scenario())
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
            self._server = self._loop.run_until_complete(_start_server(self.app, self.host, self.port))
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


async def _start_server(app: SimulatorApp, host: str, port: int) -> asyncio.base_events.Server:
    holder: dict[str, str] = {}

    def factory(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        return _Protocol(app, holder["base"]).handle(reader, writer)

    server = await asyncio.start_server(factory, host, port, backlog=1024)
    real_port = server.sockets[0].getsockname()[1]
    holder["base"] = f"http://{host}:{real_port}"
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
