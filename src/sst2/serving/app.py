"""``sst2 serve``: an HTTP JSON API over a ``SentimentClassifier`` (FastAPI + uvicorn).

``POST /predict`` with ``{"texts": [...]}`` -> ``{"predictions": [{"label", "positive_prob", "truncated"}]}``;
``GET /health`` (always open, also with an API key); ``GET /metrics`` (Prometheus). Requests arriving
together are micro-batched (``sst2.serving.batcher``): one model call for whatever is pending, in a
worker thread, and a faulty request fails alone. ``sst2.serving.security`` holds the request checks
(content type, body limit, API key) and the connection limits and timeouts; ``sst2.serving.metrics`` the
metrics and the access log.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the handler's ``request: Request``
# annotation at runtime, and ``Request`` is imported inside ``create_app`` (fastapi is optional).
import gc
import json
import logging
import math
import os
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sst2.config import ServeConfig, window_options
from sst2.data.formats import DuplicateKey, json_kind, unique_keys
from sst2.data.text import blank, blank_kind
from sst2.errors import UserError
from sst2.serving.batcher import MicroBatcher, check_predictions

log = logging.getLogger("sst2.serve")


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_batch: int = 64  # texts per model call
    max_wait_ms: float = 5.0  # how long the worker waits to fill a batch
    workers: int = 1  # model calls (batches) running at once, each in its own thread

    @property
    def max_body_bytes(self) -> int:
        # Room for max_texts texts of max_chars characters, each up to 4 UTF-8 bytes, or 12 as the escaped
        # surrogate pair (\\ud83d\\ude00) that json.dumps writes for a character beyond U+FFFF, plus punctuation.
        return self.max_texts * (self.max_chars * 12 + 16) + 1024


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a message for the client. ``close``: also
    close the connection (the rest of the body was not read)."""

    def __init__(self, status: int, message: str, close: bool = False):
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate, escaped:
        super().__init__(message)  # as it is, the JSON answer could not be written (a plain-text 500)
        self.status = status
        self.message = message
        self.close = close


class ServeError(UserError, OSError):
    pass


class _NotJSON(Exception):
    """What RFC 8259 leaves out and Python's json accepts: NaN, Infinity, a number beyond a float."""


def _refuse_constant(name: str):
    raise _NotJSON(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    if math.isinf(value := float(text)):
        raise _NotJSON(f"the number {text[:40]} is beyond a float")
    return value


def _load_json(body: bytes):
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite, object_pairs_hook=unique_keys)
    except (_NotJSON, DuplicateKey, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    except ValueError:  # an integer of more digits than sys.get_int_max_str_digits()
        raise RequestError(400, "request body has a number too long to parse "
                                f"(over {sys.get_int_max_str_digits()} digits)") from None
    except RecursionError:
        raise RequestError(400, "request body is nested too deeply to parse") from None


def _lone_surrogate(text: str) -> int | None:
    """The index of a lone UTF-16 surrogate in ``text`` (JSON allows ``"\\ud800"``; no tokenizer does), from 0."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def parse_request(body: bytes, limits: Limits) -> list[str]:
    """The texts of a ``POST /predict`` body, or ``RequestError`` with a 4xx status and a clear message."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"request body too large: {len(body)} bytes (limit {limits.max_body_bytes})")
    payload = _load_json(body)
    if not isinstance(payload, dict):
        raise RequestError(422, f'expected a JSON object {{"texts": ["...", ...]}}, got {json_kind(payload)}')
    unknown = sorted(k for k in payload if k != "texts")
    if unknown:  # a misspelt or unsupported option would otherwise be dropped without a word
        missing = "" if "texts" in payload else "no 'texts', and "
        raise RequestError(422, f"{missing}unknown field(s) {', '.join(map(repr, unknown))[:200]}: the body holds "
                                f"only 'texts'; options such as long_texts are set when the server starts")
    if "texts" not in payload:
        raise RequestError(422, 'expected a JSON object {"texts": ["...", ...]}, got {}')
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise RequestError(422, f"'texts' must be a list of strings, got {json_kind(texts)}")
    if not texts:
        raise RequestError(422, "'texts' is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"too many texts: {len(texts)} (limit {limits.max_texts} per request)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise RequestError(422, f"texts[{i}] must be a string, got {json_kind(t)}")
        if blank(t):
            raise RequestError(422, f"texts[{i}] is empty" + (f" (only {blank_kind(t)})" if t.strip() else ""))
        if len(t) > limits.max_chars:
            raise RequestError(413, f"texts[{i}] is too long: {len(t)} characters (limit {limits.max_chars})")
        if (at := _lone_surrogate(t)) is not None:
            raise RequestError(422, f"texts[{i}] is not valid Unicode: a lone surrogate U+{ord(t[at]):04X} "
                                    f"at character {at + 1}")  # counted from 1, as sst2 predict does
    return texts


def health_report(classifier, limits: Limits, batcher: MicroBatcher) -> dict:
    """What ``GET /health`` answers: the runtime, the limits and what has been served."""
    return {"status": "ok", "runtime": getattr(classifier, "runtime", None),
            "max_length": getattr(classifier, "max_length", None),
            "long_texts": getattr(classifier, "long_texts", None),
            **({"window_length": classifier.window_length, "window_overlap": classifier.window_overlap}
               if getattr(classifier, "long_texts", None) == "windows" else {}),
            "limits": {"max_texts": limits.max_texts, "max_chars": limits.max_chars},
            "served": {"batches": batcher.batches, "texts": batcher.texts,
                       "model_seconds": round(batcher.model_seconds, 3)}}


def create_app(classifier, limits: Limits | None = None, *, api_key: str | None = None,
               cors_origins: list[str] | tuple[str, ...] = ()):
    """The FastAPI application serving ``classifier`` (any object with ``predict_details(texts)``).

    ``api_key``: required by ``/predict`` and ``/metrics`` when set (``/health`` stays open, and the
    interactive docs and OpenAPI schema are not served).
    ``cors_origins``: browser origins allowed to call the API (none by default).
    """
    from fastapi import Depends, FastAPI, Request
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse, Response
    from starlette.requests import ClientDisconnect

    from sst2.serving.metrics import AccessMiddleware, Metrics
    from sst2.serving.security import RequestGuard, api_key_dependency, check_content_type, read_body

    limits = limits or Limits()
    metrics = Metrics()
    guarded = [Depends(api_key_dependency(api_key))] if api_key else []

    @asynccontextmanager
    async def lifespan(app):
        app.state.batcher = MicroBatcher(classifier, limits, metrics)
        app.state.batcher.start()
        yield
        await app.state.batcher.stop()

    # with a key, no unguarded pages besides /health: FastAPI's /docs, /redoc and /openapi.json are off
    pages = {"docs_url": None, "redoc_url": None, "openapi_url": None} if api_key else {}
    # redirect_slashes off: Starlette's 307 for "/predict/" echoes the client's Host header into Location
    app = FastAPI(title="sst2 sentiment", lifespan=lifespan, redirect_slashes=False, **pages)
    app.state.metrics = metrics
    app.add_middleware(RequestGuard)  # the 503s over --max-connections: inside CORS and the access log
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
                           expose_headers=["X-Request-ID"], max_age=600)
    app.add_middleware(AccessMiddleware, metrics=metrics)  # added last = outermost: sees every request

    @app.get("/health")
    async def health():
        return health_report(classifier, limits, app.state.batcher)

    # HEAD (what load balancers and curl -I send): the same answer without the body, not in the schema
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", dependencies=guarded)
    async def prometheus_metrics():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/predict", dependencies=guarded)
    async def predict(request: Request):
        try:
            check_content_type(request.headers.get("content-type"))
            texts = parse_request(await read_body(request, limits.max_body_bytes), limits)
        except RequestError as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status,
                                headers={"Connection": "close"} if exc.close else None)
        except ClientDisconnect:  # gone, or cut off by the request timeout: nobody reads this answer
            return JSONResponse({"detail": "the client disconnected before sending the whole body"}, 400)
        request.state.texts = len(texts)
        try:
            preds = await app.state.batcher.predict(texts)
        except Exception as exc:  # logged by the batcher, with its traceback
            return JSONResponse({"detail": f"the model failed on this request ({type(exc).__name__}); "
                                           "the server log has the details"}, status_code=500)
        return {"predictions": [p.to_dict() for p in preds]}

    return app


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    from sst2.inference.classifier import SentimentClassifier
    from sst2.inference.runtimes import physical_cores
    from sst2.serving.metrics import configure_logging
    from sst2.serving.security import load_api_key, uvicorn_config

    api_key = load_api_key(cfg.api_key_file, os.environ)  # before the model loads: a bad key file fails fast
    workers = cfg.workers or min(2, physical_cores())
    threads = cfg.threads
    if threads is None and workers > 1:  # the cores shared among the batches running at once
        threads = max(1, physical_cores() // workers)
    # spin=False: busy-waiting model threads would starve the event loop that gathers the next batch.
    clf = SentimentClassifier.from_pretrained(cfg.model_dir, runtime=cfg.runtime, threads=threads,
                                              batch_size=cfg.max_batch, spin=False, **window_options(cfg))
    configure_logging(cfg.log_level)  # once the model loaded: a command that fails changes no logging
    # The first call takes the one-off costs of a model call before any client waits for it, and shows a
    # model whose weights are not finite numbers before it answers every request with a 500.
    try:
        check_predictions(clf.predict_details(["warm-up"]), 1)
    except RuntimeError as exc:
        raise ServeError(f"{cfg.model_dir}: {exc}; retrain or re-export it") from None
    limits = Limits(max_texts=cfg.max_texts, max_chars=cfg.max_chars, max_batch=cfg.max_batch,
                    max_wait_ms=cfg.max_wait_ms, workers=workers)
    app = create_app(clf, limits, api_key=api_key, cors_origins=cfg.cors_origin or ())
    # The libraries loaded so far are ~240k long-lived objects: each full garbage collection would walk
    # them all, stalling every request for ~0.1 s. Frozen, they are left out of collections.
    gc.collect()
    gc.freeze()
    sock = bind_socket(cfg.host, cfg.port)  # bound here, so the address printed is the real one (port 0 too)
    host, port = sock.getsockname()[:2]
    auth = "; API key required for /predict and /metrics" if api_key else ""
    print(f"sst2 serve: {cfg.model_dir} ({cfg.runtime}) on http://{_url_host(host)}:{port}{auth}", flush=True)
    # Keep-alive longer than uvicorn's 5 s default: under load a client may reuse a pooled connection
    # just as the server closes it, which surfaces as a connection error.
    config = uvicorn_config(app, log_level=cfg.log_level, max_connections=cfg.max_connections,
                            keep_alive_timeout=cfg.keep_alive_timeout, request_timeout=cfg.request_timeout)
    run_until_stopped(uvicorn.Server(config), sock)


def run_until_stopped(server, sock) -> None:
    """Serve until Ctrl-C (exit 130, "interrupted") or SIGTERM, the usual stop of a service manager: uvicorn
    finishes the requests in flight, then the command ends normally (exit 0) rather than as interrupted."""
    import signal

    stopped = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    try:
        server.run(sockets=[sock])  # uvicorn takes the signal, shuts down, then raises it again: to the lambda
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stopped:
        print("sst2 serve: stopped (SIGTERM) after the requests in flight", flush=True)


def bind_socket(host: str, port: int):
    """A listening TCP socket on ``host:port`` (0 = a free port chosen by the OS)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from exc
    family, _, proto, _, addr = infos[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it each response (headers and body are two writes) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
