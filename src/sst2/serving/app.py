"""``sst2 serve``: an HTTP JSON API over a ``Classifier`` (FastAPI + uvicorn).

``POST /predict`` with ``{"texts": [...]}`` -> ``{"predictions": [{"label", "positive_prob", "truncated"}]}``;
``GET /health``. Requests arriving together are micro-batched: handlers put their texts on an asyncio
queue, and one worker gathers whatever is pending (up to ``max_batch`` texts, waiting at most
``max_wait_ms`` for more), runs the model once in a worker thread so the event loop keeps accepting
requests, and hands each request its slice of the results.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the handler's ``request: Request``
# annotation at runtime, and ``Request`` is imported inside ``create_app`` (fastapi is optional).
import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sst2.config import ServeConfig
from sst2.errors import UserError


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_batch: int = 64  # texts per model call
    max_wait_ms: float = 5.0  # how long the worker waits to fill a batch

    @property
    def max_body_bytes(self) -> int:
        # Generous for max_texts texts of max_chars characters, each up to 4 UTF-8 bytes (or a \\uXXXX
        # escape of 6 bytes each when the client escapes non-ASCII), plus JSON punctuation.
        return self.max_texts * (self.max_chars * 6 + 16) + 1024


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_request(body: bytes, limits: Limits) -> list[str]:
    """The texts of a ``POST /predict`` body, or ``RequestError`` with a 4xx status and a clear message."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"request body too large: {len(body)} bytes (limit {limits.max_body_bytes})")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or "texts" not in payload:
        raise RequestError(422, 'expected a JSON object {"texts": ["...", ...]}')
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise RequestError(422, f"'texts' must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise RequestError(422, "'texts' is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"too many texts: {len(texts)} (limit {limits.max_texts} per request)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise RequestError(422, f"texts[{i}] must be a string, got {type(t).__name__}")
        if not t.strip():
            raise RequestError(422, f"texts[{i}] is empty")
        if len(t) > limits.max_chars:
            raise RequestError(413, f"texts[{i}] is too long: {len(t)} characters (limit {limits.max_chars})")
    return texts


class MicroBatcher:
    """Gathers texts from concurrent requests into model batches; one model call at a time."""

    def __init__(self, classifier, limits: Limits):
        self.classifier = classifier
        self.limits = limits
        self.queue: asyncio.Queue = asyncio.Queue()
        # One thread: model calls never overlap (each already uses all intra-op threads).
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sst2-model")
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.texts = 0
        self.model_seconds = 0.0  # time inside model calls; near the uptime = the model is the bottleneck

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def predict(self, texts: list[str]) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _gather(self) -> list[tuple[list[str], asyncio.Future]]:
        """Block for one request, then take more until ``max_batch`` texts or ``max_wait_ms`` passes.

        A request is never split, so a batch may exceed ``max_batch`` by less than one request.
        """
        items = [await self.queue.get()]
        n = len(items[0][0])
        deadline = time.perf_counter() + self.limits.max_wait_ms / 1000
        while n < self.limits.max_batch:
            if not self.queue.empty():
                item = self.queue.get_nowait()
            else:
                timeout = deadline - time.perf_counter()
                if timeout <= 0:
                    break
                # Not asyncio.wait_for: on Python 3.11 it can drop an item that arrives as it times out.
                get = asyncio.ensure_future(self.queue.get())
                await asyncio.wait({get}, timeout=timeout)
                if not get.done():
                    get.cancel()  # an unfinished get() leaves the queue untouched
                    break
                item = get.result()
            items.append(item)
            n += len(item[0])
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._gather()
            texts = [t for req, _ in items for t in req]
            t0 = time.perf_counter()
            try:
                preds = await loop.run_in_executor(self.executor, self.classifier.predict_details, texts)
            except Exception as exc:  # a model failure fails the requests of this batch, not the server
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.model_seconds += time.perf_counter() - t0
            self.batches += 1
            self.texts += len(texts)
            start = 0
            for req, fut in items:
                if not fut.done():  # the client may have gone away
                    fut.set_result(preds[start : start + len(req)])
                start += len(req)


def create_app(classifier, limits: Limits | None = None):
    """The FastAPI application serving ``classifier`` (any object with ``predict_details(texts)``)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    limits = limits or Limits()

    @asynccontextmanager
    async def lifespan(app):
        app.state.batcher = MicroBatcher(classifier, limits)
        app.state.batcher.start()
        yield
        await app.state.batcher.stop()

    app = FastAPI(title="sst2 sentiment", lifespan=lifespan)

    @app.get("/health")
    async def health():
        b = app.state.batcher
        return {"status": "ok", "runtime": getattr(classifier, "runtime", None),
                "max_length": getattr(classifier, "max_length", None),
                "limits": {"max_texts": limits.max_texts, "max_chars": limits.max_chars},
                "served": {"batches": b.batches, "texts": b.texts, "model_seconds": round(b.model_seconds, 3)}}

    @app.post("/predict")
    async def predict(request: Request):
        try:
            texts = parse_request(await request.body(), limits)
        except RequestError as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        preds = await app.state.batcher.predict(texts)
        return {"predictions": [p.to_dict() for p in preds]}

    return app


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    from sst2.inference.classifier import Classifier

    # spin=False: busy-waiting model threads would starve the event loop that gathers the next batch.
    clf = Classifier.load(cfg.model_dir, runtime=cfg.runtime, threads=cfg.threads, batch_size=cfg.max_batch,
                          spin=False)
    limits = Limits(max_texts=cfg.max_texts, max_chars=cfg.max_chars, max_batch=cfg.max_batch,
                    max_wait_ms=cfg.max_wait_ms)
    app = create_app(clf, limits)
    sock = bind_socket(cfg.host, cfg.port)  # bound here, so the address printed is the real one (port 0 too)
    host, port = sock.getsockname()[:2]
    print(f"sst2 serve: {cfg.model_dir} ({cfg.runtime}) on http://{_url_host(host)}:{port}", flush=True)
    # Keep-alive longer than uvicorn's 5 s default: under load a client may reuse a pooled connection
    # just as the server closes it, which surfaces as a connection error.
    config = uvicorn.Config(app, log_level=cfg.log_level, access_log=False, timeout_keep_alive=30)
    uvicorn.Server(config).run(sockets=[sock])


class ServeError(UserError, OSError):
    pass


def bind_socket(host: str, port: int):
    """A listening TCP socket on ``host:port`` (0 = a free port chosen by the OS)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from exc
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
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
