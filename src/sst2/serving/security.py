"""What ``sst2 serve`` asks of a request before the model sees it, and how long a client may take to send it.

* ``check_content_type``: 415 unless ``Content-Type: application/json`` (``; charset=utf-8`` allowed).
* ``read_body``: 413 from ``Content-Length`` before any of the body is read, or as soon as a chunked
  body passes the limit (it is never buffered whole).
* ``load_api_key`` / ``api_key_dependency``: an optional API key (a file or ``$SST2_API_KEY``), compared in
  constant time; ``/health`` stays open so that a load balancer can probe it without the key.
* ``uvicorn_config``: uvicorn with a keep-alive timeout and, through ``TimedH11Protocol``, a deadline on
  receiving each request, which uvicorn itself does not have, and a cap on connections whose 503s
  ``RequestGuard`` answers inside the app, so that they are logged and counted like every response;
  it also answers 431 to a request head over ``MAX_HEADER_BYTES``.

Imported by ``sst2.serve`` only when it builds or runs an app (fastapi and uvicorn are optional).
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from sst2.serving.app import RequestError, ServeError

log = logging.getLogger("sst2.serve")
API_KEY_ENV = "SST2_API_KEY"
OVER_CAPACITY = "sst2.over_capacity"  # the scope extension marking a request that arrived over the cap
MAX_HEADER_BYTES = 16 * 1024  # request line plus headers: 431 (RequestGuard), or uvicorn's 400 if not read at once


def check_content_type(value: str | None) -> None:
    """``RequestError(415)`` unless ``value`` is ``application/json``, optionally with a UTF-8 charset."""
    media, _, params = (value or "").partition(";")
    if media.strip().lower() != "application/json":
        got = f"got {value[:100]!r}" if value else "the header is missing"
        raise RequestError(415, f"Content-Type must be application/json, {got}")
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        charset = charset.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise RequestError(415, f"Content-Type charset must be utf-8, got {charset[:40]!r}")


async def read_body(request, limit: int) -> bytes:
    """The request body, or ``RequestError(413)`` once it is known to exceed ``limit`` bytes: from the
    ``Content-Length`` header before reading anything, or while counting a chunked body's chunks."""
    declared = request.headers.get("content-length")  # uvicorn (h11) has already rejected a malformed one
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body too large: {int(declared)} bytes (limit {limit})", close=True)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body too large: the chunked body passed the limit of {limit} bytes",
                               close=True)
    return bytes(body)


def load_api_key(path: str | None, environ=os.environ) -> str | None:
    """The API key from ``path`` (whitespace around it ignored), else from ``$SST2_API_KEY``, else None.
    Error messages name where the key came from, never the key."""
    if path:
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServeError(f"cannot read the API key file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ServeError(f"the API key file {path} is not UTF-8 text") from None
        source = f"the API key file {path}"
    elif environ.get(API_KEY_ENV) is not None:
        key, source = environ[API_KEY_ENV].strip(), f"${API_KEY_ENV}"
    else:
        return None
    if not key:
        raise ServeError(f"{source} is empty: put the key in it, or unset it to serve without a key")
    if not (key.isascii() and key.isprintable()) or " " in key:
        raise ServeError(f"the key in {source} must be printable ASCII without spaces (it travels in a header)")
    return key


def api_key_dependency(key: str):
    """A FastAPI dependency that lets a request through only with ``key``, in ``Authorization: Bearer KEY``
    or ``X-API-Key: KEY``; else 401 with a message. Both schemes also show in the OpenAPI docs."""
    from fastapi import Depends, HTTPException
    from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

    expected = key.encode("latin-1")
    bearer = HTTPBearer(auto_error=False)
    header = APIKeyHeader(name="X-API-Key", auto_error=False)
    challenge = {"WWW-Authenticate": "Bearer"}

    async def require_api_key(credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                              x_api_key: str | None = Depends(header)) -> None:
        given = credentials.credentials if credentials is not None else x_api_key
        if not given:
            raise HTTPException(401, "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                headers=challenge)
        # Header values arrive decoded as latin-1, so this round-trips any bytes the client sent.
        if not hmac.compare_digest(given.encode("latin-1"), expected):
            raise HTTPException(401, "invalid API key", headers=challenge)

    return require_api_key


class RequestGuard:
    """ASGI middleware answering, with a JSON ``detail`` like every other error:

    * 503 to a request that ``TimedH11Protocol`` marked as arriving while the server was at
      ``--max-connections``, with ``Retry-After`` and a warning in the log;
    * 431 to a request line plus headers over ``MAX_HEADER_BYTES``. uvicorn's limit
      (``h11_max_incomplete_event_size``) applies only to a head still incomplete after a read, so a
      head of up to 64 KB arriving in one read passed it.

    ``create_app`` puts it inside the access middleware, so these answers get a request id, an access
    log line and a count in ``/metrics`` (uvicorn's own 503 had none of them)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        cap = (scope.get("extensions") or {}).get(OVER_CAPACITY)
        size = head_bytes(scope) if scope["type"] == "http" else 0
        if cap is None and size <= MAX_HEADER_BYTES:
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        if cap is None:
            detail = f"request headers too large: {size} bytes (limit {MAX_HEADER_BYTES})"
            await JSONResponse({"detail": detail}, 431, headers={"Connection": "close"})(scope, receive, send)
            return
        log.warning("503 for %s %s: the server is at its cap of %d connections (--max-connections)",
                    scope["method"], ascii(scope["path"][:200]), cap)
        detail = f"the server is at its cap of {cap} open connections (--max-connections); retry later"
        await JSONResponse({"detail": detail}, 503, headers={"Retry-After": "1", "Connection": "close"})(
            scope, receive, send)


def head_bytes(scope) -> int:
    """The size of an HTTP request's line and headers as sent, from its ASGI scope."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + (len(q) + 1 if (q := scope["query_string"]) else 0)
    line = len(scope["method"]) + 1 + target + len(" HTTP/1.1\r\n")
    return line + sum(len(k) + len(v) + 4 for k, v in scope["headers"]) + 2


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline of ``request_timeout`` seconds on receiving each request,
    headers and body. uvicorn has no such setting: its keep-alive timer starts only after a response,
    so a connection that never sends its request, or trickles it, would stay open for ever. The
    deadline starts when the connection opens and again at the first byte of each later request (idle
    time between requests is the keep-alive timeout's); when it passes, the connection is closed. A
    connection whose responses the client does not read (writing paused for ``request_timeout``) is
    closed as well: else it would hold its place under the cap for ever.

    It also applies the cap of ``max_connections`` in place of uvicorn's ``limit_concurrency`` (the same
    test, at each request): uvicorn would answer such a request itself, out of the app's sight, so
    instead the request goes to the app marked with the ``OVER_CAPACITY`` extension, for
    ``RequestGuard`` to answer. uvicorn reads ``self.app`` at each request, hence the property."""

    request_timeout: float = 10.0
    max_connections: int | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # the cap is checked in ``app`` below

    @property
    def app(self):
        cap = self.max_connections
        # this connection is among ``connections`` already; this request's task is not yet in ``tasks``
        if cap is not None and (len(self.connections) > cap or len(self.tasks) >= cap):
            return self._over_capacity
        return self._app

    @app.setter
    def app(self, value) -> None:
        self._app = value

    async def _over_capacity(self, scope, receive, send) -> None:
        scope["extensions"] = {**(scope.get("extensions") or {}), OVER_CAPACITY: self.max_connections}
        await self._app(scope, receive, send)

    def connection_made(self, transport) -> None:
        self._deadline = self._stalled = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # the whole request is in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        state = self.conn.their_state  # uvicorn may have parsed a pipelined request's headers already
        if state is h11.SEND_BODY or (state is h11.IDLE and self.conn.trailing_data[0]):
            self._arm()  # part of a pipelined request is in: the rest gets the same deadline

    def send_400_response(self, msg: str) -> None:  # uvicorn's answer to what h11 cannot parse
        super().send_400_response(msg)
        metrics = getattr(getattr(self.config.app, "state", None), "metrics", None)
        if metrics is not None:  # else the 400 would be missing from the access log and /metrics
            metrics.malformed_request()

    def pause_writing(self) -> None:  # the client's receive buffer is full: it is not reading its responses
        super().pause_writing()
        self._stalled = self.loop.call_later(self.request_timeout, self._unread)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stalled = _cancelled(self._stalled)

    def connection_lost(self, exc) -> None:
        self._disarm()
        self._stalled = _cancelled(self._stalled)
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        self._deadline = _cancelled(self._deadline)

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose request took over %s s to arrive", self.request_timeout)
            self.transport.close()

    def _unread(self) -> None:
        self._stalled = None
        self.logger.info("closing a connection that has not read its responses for %s s", self.request_timeout)
        self.transport.abort()  # close() would wait for the unread bytes to go out


def _cancelled(timer) -> None:
    """Cancel an ``asyncio`` timer handle (or nothing); None, to store in its place."""
    if timer is not None:
        timer.cancel()


def uvicorn_config(app, *, log_level: str = "warning", max_connections: int = 1000, keep_alive_timeout: float = 30,
                   request_timeout: float = 10):
    """The ``uvicorn.Config`` of ``sst2 serve`` (``ServeConfig`` explains each setting)."""
    import uvicorn

    protocol = type("TimedH11Protocol", (TimedH11Protocol,), {"request_timeout": request_timeout,
                                                                "max_connections": max_connections})
    # ws="none": the app has no WebSocket route, and uvicorn's WebSocket protocols (used when the websockets
    # package happens to be installed) would take upgraded connections out of this protocol's cap and timeouts
    return uvicorn.Config(app, http=protocol, ws="none", log_level=log_level, access_log=False,
                          timeout_keep_alive=keep_alive_timeout,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES)
