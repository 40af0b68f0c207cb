"""``sst2 serve`` hardening on a real uvicorn server (127.0.0.1, free port): content type, body limit
enforced while reading, request timeout and connection cap, API key, CORS."""

import logging
import socket
import time

import httpx
import pytest

from sst2.config import ConfigError, ServeConfig
from sst2.inference.classifier import Prediction
from sst2.serving.app import Limits, ServeError, create_app
from sst2.serving.security import load_api_key
from test_serve import client_for, running_server

LIMITS = Limits(max_texts=4, max_chars=300, max_batch=8, max_wait_ms=5)  # max_body_bytes 15488
KEY = "s3cret-key-0123456789"


class EchoClassifier:
    def predict_details(self, texts):
        return [Prediction("positive", {"negative": 0.0, "positive": float(len(t))}, False) for t in texts]


@pytest.fixture(scope="module")
def server():
    with client_for(create_app(EchoClassifier(), LIMITS), request_timeout=1.0) as client:
        yield client


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def connect(client: httpx.Client, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((client.base_url.host, client.base_url.port), timeout=timeout)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", "application/json; charset=latin-1"])
def test_predict_needs_content_type_json(server, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = server.post("/predict", content=b'{"texts": ["good"]}', headers=headers)
    expected = {None: "Content-Type must be application/json, the header is missing",
                "application/json; charset=latin-1": "Content-Type charset must be utf-8, got 'latin-1'"}
    message = expected.get(content_type, f"Content-Type must be application/json, got {content_type!r}")
    assert (r.status_code, r.json()) == (415, {"detail": message})


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8"])
def test_predict_accepts_json_with_utf8_charset(server, content_type):
    r = server.post("/predict", content=b'{"texts": ["good"]}', headers={"content-type": content_type})
    assert r.status_code == 200 and r.json()["predictions"][0]["positive_prob"] == 4.0


def test_content_length_over_the_limit_gets_413_before_the_body_is_sent(server):
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 200000000\r\n\r\n{\"texts\": [")  # and nothing more
        status, headers, body = read_response(sock)
    assert (status, body) == (413, b'{"detail":"request body too large: 200000000 bytes (limit 15488)"}')
    assert headers["connection"] == "close"


def test_chunked_body_over_the_limit_gets_413_before_it_ends(server):
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):  # 20 KiB, over the 15488-byte limit, and no final chunk: the body never ends
            sock.sendall(b"1000\r\n" + b"x" * 4096 + b"\r\n")
        status, headers, body = read_response(sock)
    detail = b"request body too large: the chunked body passed the limit of 15488 bytes"
    assert (status, body) == (413, b'{"detail":"' + detail + b'"}')
    assert headers["connection"] == "close"


def test_a_chunked_body_within_the_limit_is_read(server):
    r = server.post("/predict", content=iter([b'{"texts": ', b'["good", "fine"]}']),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes ``sock`` (recv returns b"")."""
    t0 = time.monotonic()
    try:
        while sock.recv(1024):
            pass
    except ConnectionResetError:  # closed while bytes we sent were still unread
        pass
    return time.monotonic() - t0


def test_a_connection_that_sends_nothing_is_closed_at_the_request_timeout(server):
    with connect(server) as sock:
        assert 0.5 < _closed_after(sock) < 3.0  # request_timeout=1.0; socket timeout 5 s fails the test


def test_a_request_trickled_too_slowly_is_closed_at_the_request_timeout(server):
    with connect(server) as sock:
        t0 = time.monotonic()
        try:
            for byte in b"POST /predict HTTP/1.1\r\nHost: x\r\n":  # one byte each 0.1 s: 3.5 s for the line
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _closed_after(sock) + (time.monotonic() - t0) < 3.0


def test_a_body_that_stops_arriving_is_cut_at_the_request_timeout(server):
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"texts\": ")
        assert _closed_after(sock) < 3.0


def test_a_pipelined_request_whose_body_stops_arriving_is_cut_at_the_request_timeout(server):
    with connect(server) as sock:
        body = b'{"texts": ["good"]}'
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body) +
                     b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"te")
        assert read_response(sock)[0] == 200
        assert _closed_after(sock) < 3.0


def test_a_client_that_never_reads_its_responses_is_cut_off(server):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(2.0)
        sock.connect((server.base_url.host, server.base_url.port))
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        sent = 0
        try:
            while sent < 3000:  # responses of a few KB each: more than the buffers on both sides hold
                sock.sendall(request)
                sent += 1
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass  # the server stopped reading, or has already cut the connection
        time.sleep(4.0)  # request_timeout=1.0: the stalled connection is aborted by now
        try:
            while sock.recv(65536):  # what was delivered before the abort, then the end
                pass
        except ConnectionResetError:
            pass
    assert sent > 100


def _get_with_head_of(size: int) -> bytes:
    start, end = b"GET /health?x=1 HTTP/1.1\r\nHost: t\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("size,status", [(16 * 1024, 200), (16 * 1024 + 1, 431), (60_000, 431)])
def test_a_request_head_over_16_kb_is_refused_even_when_it_arrives_in_one_read(server, size, status):
    with connect(server) as sock:
        sock.sendall(_get_with_head_of(size))
        got, headers, body = read_response(sock)
    assert got == status
    if status == 431:  # under 64 KB the head arrives in one read, which uvicorn's own limit does not see
        assert body == b'{"detail":"request headers too large: %d bytes (limit 16384)"}' % size
        assert headers["connection"] == "close"
    assert server.get("/health").status_code == 200


def test_kept_alive_connections_serve_requests_after_idling_past_the_request_timeout(server):
    assert server.post("/predict", json={"texts": ["good"]}).status_code == 200
    time.sleep(1.5)  # over request_timeout, under keep_alive_timeout: the connection is still open
    assert server.post("/predict", json={"texts": ["good"]}).status_code == 200


def test_max_connections_caps_open_connections_with_a_logged_and_counted_503(caplog):
    caplog.set_level(logging.INFO, logger="sst2.serve")
    app = create_app(EchoClassifier(), LIMITS, cors_origins=["https://app.example"])
    url = "http://127.0.0.1:{}/predict"
    with running_server(app, max_connections=2) as port:
        with socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port)):
            time.sleep(0.2)  # both accepted
            r = httpx.post(url.format(port), json={"texts": ["good"]},
                           headers={"X-Request-ID": "over-1", "Origin": "https://app.example"})
        detail = "the server is at its cap of 2 open connections (--max-connections); retry later"
        assert (r.status_code, r.json(), r.headers["retry-after"]) == (503, {"detail": detail}, "1")
        assert (r.headers["x-request-id"], r.headers["connection"]) == ("over-1", "close")
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        time.sleep(0.2)
        assert httpx.post(url.format(port), json={"texts": ["good"]}).status_code == 200
        counted = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    with running_server(app, max_connections=1) as port:  # a cap of N serves N connections
        assert httpx.post(url.format(port), json={"texts": ["good"]}).status_code == 200
    assert 'sst2_requests_total{path="other",status="503"} 1.0' in counted
    assert 'sst2_errors_total{kind="server"} 1.0' in counted
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("sst2.serve")]
    # (by content, not position: a request of an earlier test's server may be logged late, in between)
    assert [x for x in lines if x[1] == "WARNING"] == [
        ("sst2.serve", "WARNING", "503 for POST '/predict': the server is at its cap of 2 connections "
                                  "(--max-connections)")]
    over = [x for x in lines if x[2].endswith(" request_id=over-1")]
    assert len(over) == 1 and over[0][:2] == ("sst2.serve.access", "INFO")
    assert over[0][2].startswith("POST /predict 503 texts=0 ")


def test_a_request_the_http_parser_refuses_is_logged_and_counted(caplog):
    caplog.set_level(logging.INFO, logger="sst2.serve")
    with running_server(create_app(EchoClassifier(), LIMITS)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")  # uvicorn's own answer
        counted = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'sst2_requests_total{path="other",status="400"} 1.0' in counted
    assert 'sst2_errors_total{kind="client"} 1.0' in counted
    lines = [r.getMessage() for r in caplog.records if r.name == "sst2.serve.access"]
    assert lines[0] == "- - 400 texts=0 latency_ms=0.0 request_id=- (not a valid HTTP request)"


@pytest.fixture(scope="module")
def keyed():
    with client_for(create_app(EchoClassifier(), LIMITS, api_key=KEY)) as client:
        yield client


@pytest.mark.parametrize("headers,message", [
    ({}, "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"),
    ({"Authorization": "Basic " + KEY}, "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"),
    ({"Authorization": "Bearer wrong"}, "invalid API key"),
    ({"X-API-Key": KEY[:-1]}, "invalid API key"),
    ({"X-API-Key": KEY + "x"}, "invalid API key"),
])
def test_api_key_required_for_predict_and_metrics(keyed, headers, message):
    predict = keyed.post("/predict", json={"texts": ["good"]}, headers=headers)
    for r in (predict, keyed.get("/metrics", headers=headers)):
        assert (r.status_code, r.json()) == (401, {"detail": message})
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}])
def test_api_key_accepted_in_either_header_and_health_stays_open(keyed, headers):
    assert keyed.post("/predict", json={"texts": ["good"]}, headers=headers).status_code == 200
    assert keyed.get("/metrics", headers=headers).status_code == 200
    assert keyed.get("/health").status_code == 200


def test_with_a_key_no_other_page_is_open(keyed):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert keyed.get(path).status_code == 404, path
    with client_for(create_app(EchoClassifier(), LIMITS)) as open_client:  # without a key the docs are served
        assert open_client.get("/openapi.json").status_code == 200


def test_a_trailing_slash_is_not_redirected_to_a_host_the_client_named(keyed):
    r = keyed.post("/predict/", json={"texts": ["x"]}, headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers
    r = keyed.get("/health/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


def test_head_on_health_answers_like_get_without_a_body(keyed):
    r = keyed.head("/health")
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"", "application/json")


def test_load_api_key_from_file_or_environment_never_echoing_it(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert load_api_key(str(key_file), {"SST2_API_KEY": "other"}) == KEY  # the file wins
    assert load_api_key(None, {"SST2_API_KEY": KEY}) == KEY
    assert load_api_key(None, {}) is None
    cases = [(str(tmp_path / "missing"), {}, f"cannot read the API key file {tmp_path / 'missing'}: "
                                               "No such file or directory"),
             (None, {"SST2_API_KEY": " "}, "$SST2_API_KEY is empty: put the key in it, or unset it to serve "
                                           "without a key"),
             (None, {"SST2_API_KEY": "two words"}, "the key in $SST2_API_KEY must be printable ASCII without "
                                                   "spaces (it travels in a header)")]
    for path, env, message in cases:
        with pytest.raises(ServeError) as info:
            load_api_key(path, env)
        assert str(info.value) == message


def test_cors_allow_list():
    app = create_app(EchoClassifier(), LIMITS, cors_origins=["https://app.example"])
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    with client_for(app) as client:
        ok = client.options("/predict", headers={"Origin": "https://app.example", **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        bad = client.options("/predict", headers={"Origin": "https://evil.example", **preflight})
        assert (bad.status_code, bad.text) == (400, "Disallowed CORS origin")
        r = client.post("/predict", json={"texts": ["good"]}, headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()


def test_no_cors_headers_by_default(server):
    r = server.post("/predict", json={"texts": ["good"]}, headers={"Origin": "https://app.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_serve_config_defaults_and_validation():
    cfg = ServeConfig()
    assert (cfg.host, cfg.api_key_file, cfg.cors_origin) == ("127.0.0.1", None, None)
    assert (cfg.max_connections, cfg.keep_alive_timeout, cfg.request_timeout) == (1000, 30.0, 10.0)
    assert (cfg.workers, cfg.max_wait_ms) == (None, 1.0)  # workers: 2 with 2+ physical cores
    with pytest.raises(ConfigError) as info:
        ServeConfig(max_connections=0, request_timeout=0, keep_alive_timeout=-1,
                    cors_origin=["https://ok.example:8080", "https://x.example/path", "ftp://x"])
    assert str(info.value) == (
        "invalid serve options:\n  max_connections: must be >= 1, got 0\n"
        "  keep_alive_timeout: must be > 0 seconds, got -1\n  request_timeout: must be > 0 seconds, got 0\n"
        "  cors_origin: 'https://x.example/path' is not an origin like https://host[:port] (no path)\n"
        "  cors_origin: 'ftp://x' is not an origin like https://host[:port] (no path)")


def test_a_websocket_upgrade_is_answered_as_plain_http(server):
    from sst2.serving.security import uvicorn_config

    assert uvicorn_config(object()).ws == "none"  # even where the websockets package is installed
    with connect(server) as sock:  # the upgrade is not taken: the app answers, the connection stays ours
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        status, headers, body = read_response(sock)
    assert status == 200 and b"status" in body
