"""``sst2 serve``: a real uvicorn server on 127.0.0.1 (free port) with valid and invalid requests, the
micro-batcher on its own, failures of the model, the access log and the metrics.
(``test_serve_security.py``: content type, body limit, timeouts, API key, CORS.)"""

import asyncio
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from sst2.errors import UserError
from sst2.inference.classifier import Prediction, SentimentClassifier
from sst2.serving.app import Limits, RequestError, create_app, parse_request
from sst2.serving.batcher import MicroBatcher

LIMITS = Limits(max_texts=4, max_chars=300, max_batch=8, max_wait_ms=5)
LONG = " ".join(["the film is good and"] * 12)  # 60 words, 240 characters: over max_length 32 tokens
MODEL_FAILED = "the model failed on this request (ValueError); the server log has the details"


@contextmanager
def running_server(app, **config):
    """Yields the port of a uvicorn server (``sst2 serve``'s own config, ``config`` overriding it)
    running ``app`` in a background thread on a free 127.0.0.1 port."""
    import uvicorn

    from sst2.serving.app import bind_socket
    from sst2.serving.security import uvicorn_config

    sock = bind_socket("127.0.0.1", 0)  # as sst2 serve binds: the OS picks a free port
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn_config(app, **config))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        yield port
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def client_for(app, **config):
    with running_server(app, **config) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def clf(tiny_model_dir):
    return SentimentClassifier.from_pretrained(tiny_model_dir, threads=1)


@pytest.fixture(scope="module")
def server(clf):
    """An HTTP client for a server running ``create_app(clf, LIMITS)``."""
    with client_for(create_app(clf, LIMITS)) as client:
        yield client


def test_health(server):
    r = server.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["runtime"] == "torch" and body["max_length"] == 32
    assert body["limits"] == {"max_texts": 4, "max_chars": 300}
    assert body["long_texts"] == "truncate" and "window_length" not in body


def test_health_names_the_window_settings_of_a_windows_server(tiny_model_dir):
    from sst2.serving.app import health_report

    win = SentimentClassifier.from_pretrained(tiny_model_dir, threads=1, long_texts="windows", window_length=12)
    batcher = type("B", (), {"batches": 0, "texts": 0, "model_seconds": 0.0})()
    body = health_report(win, LIMITS, batcher)  # before: no word of windows
    assert (body["long_texts"], body["window_length"], body["window_overlap"]) == ("windows", 12, 3)


def test_predict_returns_one_prediction_per_text_in_order(server, clf):
    texts = ["good film", "the plot is dull", LONG]
    r = server.post("/predict", json={"texts": texts})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    expected = [p.to_dict() for p in clf.predict_details(texts)]
    assert [p["label"] for p in preds] == [e["label"] for e in expected]
    assert [p["positive_prob"] for p in preds] == pytest.approx([e["positive_prob"] for e in expected], abs=1e-6)
    assert [p["truncated"] for p in preds] == [False, False, True]


@pytest.mark.parametrize("body,status,message", [
    (b'{"texts": ["good"', 400, "not valid JSON"),
    (b'["good"]', 422, 'expected a JSON object {"texts": ["...", ...]}, got an array'),
    (b'{}', 422, 'expected a JSON object {"texts": ["...", ...]}, got {}'),
    (b'{"text": ["good"]}', 422, "no 'texts', and unknown field(s) 'text': the body holds only 'texts'"),  # was
    #   the generic message, not naming the misspelt key
    (b'{"texts": "good"}', 422, "'texts' must be a list of strings, got a string"),  # JSON's names, not Python's
    (b'{"texts": null}', 422, "'texts' must be a list of strings, got null"),  # was "got NoneType"
    (b'{"texts": []}', 422, "'texts' is empty"),
    (b'{"texts": ["good", 3]}', 422, "texts[1] must be a string, got a number"),
    (b'{"texts": ["good", null]}', 422, "texts[1] must be a string, got null"),
    (b'{"texts": ["good", "  "]}', 422, "texts[1] is empty"),
    # what the tokenizer drops (a zero-width space, a NUL, a byte-order mark) is no text either
    (b'{"texts": ["\\u200b \\u0000\\ufeff"]}', 422, "texts[0] is empty (only invisible characters)"),
    (b'{"texts": ["\\u0301\\u0301"]}', 422, "texts[0] is empty (only combining marks)"),  # was 200: [CLS] [SEP]
    (b'{"texts": ["a", "b", "c", "d", "e"]}', 413, "too many texts: 5 (limit 4 per request)"),
    (b'{"texts": ["' + b"x" * 301 + b'"]}', 413, "texts[0] is too long: 301 characters (limit 300)"),
    (b'{"texts": ["' + b"x" * 20000 + b'"]}', 413, "request body too large"),
    (b'{"texts": ["good"], "long_texts": "windows"}', 422,  # was 200, the option dropped
     "unknown field(s) 'long_texts': the body holds only 'texts'"),
])
def test_invalid_requests_get_a_clear_4xx_and_the_server_keeps_serving(server, body, status, message):
    r = server.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert message in r.json()["detail"]
    ok = server.post("/predict", json={"texts": ["good film"]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


@pytest.mark.parametrize("body,status,message", [
    # JSON may escape a lone UTF-16 surrogate; no tokenizer takes one (Hugging Face's raises a TypeError)
    (b'{"texts": ["good", "bad \\ud800 text"]}', 422,
     "texts[1] is not valid Unicode: a lone surrogate U+D800 at character 5"),  # from 1, as sst2 predict counts
    (b'{"texts": ["x\\udc80"]}', 422, "texts[0] is not valid Unicode: a lone surrogate U+DC80 at character 2"),
    (b'{"texts": ["good"], "\\ud800": 1, "\\ud800": 2}', 400,  # was a plain-text 500: the message could
     "request body is not valid JSON: the key '\\ud800' appears twice in one object"),  # not be encoded
    # what Python's json accepts beyond the JSON standard
    (b'{"texts": ["good"], "x": NaN}', 400, "request body is not valid JSON: NaN is not a JSON number"),
    (b'{"texts": ["good"], "x": -Infinity}', 400, "request body is not valid JSON: -Infinity is not a JSON number"),
    (b'{"texts": ["good"], "x": 1e999}', 400, "request body is not valid JSON: the number 1e999 is beyond a float"),
    (b'{"texts": ["good"], "texts": ["bad"]}', 400,
     "request body is not valid JSON: the key 'texts' appears twice in one object"),
    # Python's json raises ValueError on an int over 4300 digits, RecursionError on deep nesting
    (b'{"texts": [' + b"7" * 5000 + b"]}", 400, "request body has a number too long to parse (over 4300 digits)"),
    (b'{"texts": ' + b"[" * 3000 + b"]" * 3000 + b"}", 400, "request body is nested too deeply to parse"),
])
def test_what_the_tokenizer_or_json_cannot_take_gets_an_exact_4xx(server, body, status, message):
    r = server.post("/predict", content=body, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (status, {"detail": message})
    ok = server.post("/predict", json={"texts": ["good film", "bad \U0001F600 film"]})  # a valid surrogate pair
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2


def test_the_real_tokenizer_rejects_a_lone_surrogate(clf):
    """Why the checks exist: the fast tokenizer fails the whole batch a lone surrogate is in, so the
    classifier refuses the text first, naming it."""
    with pytest.raises(TypeError):
        clf.tokenize(["good", "bad \ud800 text"])
    with pytest.raises(ValueError, match=r"texts\[1\]: not valid Unicode text \(a lone surrogate at character 5\)"):
        clf.predict_details(["good", "bad \ud800 text"])


def test_the_largest_request_within_the_limits_is_not_too_large_however_it_is_escaped():
    import json

    limits = Limits(max_texts=4, max_chars=300)
    texts = ["\U0001f600" * 300] * 4  # characters beyond U+FFFF: a 12-byte escape each in json.dumps
    for body in (json.dumps({"texts": texts}), json.dumps({"texts": texts}, ensure_ascii=False)):
        assert parse_request(body.encode(), limits) == texts  # was 413: request body too large


@pytest.mark.parametrize("body,message", [
    (b"[" * 100_000 + b"]" * 100_000, "request body is nested too deeply to parse"),
    (b'{"texts": ["good", ' + b"9" * 5000 + b"]}", "request body has a number too long to parse (over 4300 digits)"),
])
def test_parse_request_turns_json_parser_limits_into_400(body, message):
    assert len(body) <= Limits().max_body_bytes  # the default limits let these bodies through to the parser
    with pytest.raises(RequestError) as info:
        parse_request(body, Limits())
    assert (info.value.status, info.value.message) == (400, message)


def test_concurrent_requests_each_get_their_own_results(server, clf):
    texts = [f"the film is {w}" for w in ["good", "bad", "dull", "great", "flat", "lovely", "silly", "smart"]] * 3
    expected = [p.label for p in clf.predict_details(texts)]

    def one(text):
        r = server.post("/predict", json={"texts": [text]})
        r.raise_for_status()
        return r.json()["predictions"][0]["label"]

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(one, texts)) == expected


class RecordingClassifier:
    """Stands in for a Classifier; records the size of every model batch."""

    def __init__(self):
        self.batches: list[int] = []

    def predict_details(self, texts):
        self.batches.append(len(texts))
        return [Prediction("positive", {"negative": 0.0, "positive": float(len(t))}, False) for t in texts]


@pytest.mark.parametrize("max_batch,expected", [(64, [10]), (4, [4, 4, 2])])
def test_micro_batcher_gathers_pending_requests(max_batch, expected):
    fake = RecordingClassifier()

    async def run():
        batcher = MicroBatcher(fake, Limits(max_batch=max_batch, max_wait_ms=50))
        batcher.start()
        # all ten requests are queued before the worker runs, so it finds them pending
        results = await asyncio.gather(*(batcher.predict(["x" * (i + 1)]) for i in range(10)))
        await batcher.stop()
        return results

    results = asyncio.run(run())
    assert fake.batches == expected
    assert [r[0].positive_prob for r in results] == [float(i + 1) for i in range(10)]  # each got its own


def test_responses_are_not_held_back_by_nagle_and_delayed_acks(server):
    """bind_socket makes an IPPROTO_TCP socket, so asyncio sets TCP_NODELAY on each connection; with a
    proto-0 socket every response (headers and body are two writes) waited ~40 ms for a delayed ACK."""
    from sst2.serving.app import bind_socket

    with bind_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
    server.get("/health")
    latencies = []
    for _ in range(15):
        t0 = time.perf_counter()
        assert server.get("/health").status_code == 200
        latencies.append(time.perf_counter() - t0)
    assert sorted(latencies)[7] < 0.025  # the median; 0.044 s with the delayed ACKs


def test_serve_binds_first_so_port_0_reports_the_real_port():
    from sst2.serving.app import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0
        with pytest.raises(UserError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: Address already in use$"):
            bind_socket("127.0.0.1", port).close()
    finally:
        sock.close()


def test_sigterm_stops_the_server_after_its_requests_and_exits_0(tiny_model_dir):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "sst2.cli", "serve", "--model-dir", str(tiny_model_dir), "--port",
                             "0", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split(" on ")[1].split(";")[0].strip()  # "sst2 serve: DIR (torch) on URL"
        assert httpx.post(f"{url}/predict", json={"texts": ["good film"]}, timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)  # what systemctl stop and docker stop send
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err  # was 130, "interrupted": a failed stop to a service manager
    assert "stopped (SIGTERM) after the requests in flight" in out


class PoisonClassifier:
    """Stands in for a Classifier whose model fails on any batch holding a text with ``POISON``; a text
    with ``SLOW`` holds the model for a while, so that requests sent meanwhile queue into one batch."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def predict_details(self, texts):
        with self.lock:
            self.batches.append(list(texts))
        if any("SLOW" in t for t in texts):
            time.sleep(0.3)
        if any("POISON" in t for t in texts):
            raise ValueError("the model cannot take this text")
        return [Prediction("positive", {"negative": 0.0, "positive": float(len(t))}, False) for t in texts]


def test_micro_batcher_retries_a_failed_batch_one_request_at_a_time():
    fake = PoisonClassifier()

    async def run():
        batcher = MicroBatcher(fake, Limits(max_batch=64, max_wait_ms=50))
        batcher.start()
        texts = ["x" * (i + 1) for i in range(10)]
        texts[4] = "POISON"
        results = await asyncio.gather(*(batcher.predict([t]) for t in texts), return_exceptions=True)
        await batcher.stop()
        return texts, results

    texts, results = asyncio.run(run())
    assert fake.batches[0] == texts  # one batch of all ten failed, then each request ran alone
    assert len(fake.batches) == 11
    assert isinstance(results[4], ValueError)
    assert [r[0].positive_prob for i, r in enumerate(results) if i != 4] == [
        float(len(t)) for i, t in enumerate(texts) if i != 4]


def test_a_poison_request_fails_alone_among_concurrent_requests():
    fake = PoisonClassifier()
    normal = [f"the film number {i} is good" for i in range(48)]
    with client_for(create_app(fake, Limits(max_batch=64, max_wait_ms=20))) as client:

        def post(text):
            return client.post("/predict", json={"texts": [text]})

        with ThreadPoolExecutor(16) as pool:
            slow = pool.submit(post, "SLOW start")  # while it runs, the requests below queue up together
            time.sleep(0.05)
            first = [pool.submit(post, t) for t in normal[:24]]
            poison = pool.submit(post, "a POISON text")
            rest = [pool.submit(post, t) for t in normal[24:]]
            responses = [f.result() for f in first + rest]
            poisoned, slow = poison.result(), slow.result()
    assert (poisoned.status_code, poisoned.json()) == (500, {"detail": MODEL_FAILED})
    assert slow.status_code == 200
    assert [r.status_code for r in responses].count(200) == len(normal)  # 0 normal failures
    assert [r.json()["predictions"][0]["positive_prob"] for r in responses] == [float(len(t)) for t in normal]
    failed = [b for b in fake.batches if any("POISON" in t for t in b)]
    assert len(failed[0]) > 1 and failed[-1] == ["a POISON text"]  # batched with others, then retried alone


def test_a_failing_model_gets_500_with_a_message_and_the_server_keeps_serving():
    fake = PoisonClassifier()
    with client_for(create_app(fake, LIMITS)) as client:
        r = client.post("/predict", json={"texts": ["good", "POISON"]})
        assert (r.status_code, r.json()) == (500, {"detail": MODEL_FAILED})
        assert client.post("/predict", json={"texts": ["good"]}).status_code == 200


def _access_records(caplog, n, timeout=5.0):
    """The access log records, once there are ``n`` (each is written after its response is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in caplog.records if r.name == "sst2.serve.access"]
        if len(records) >= n or time.monotonic() > deadline:
            return records
        time.sleep(0.01)


def test_access_log_line_per_request_with_request_id(caplog):
    caplog.set_level(logging.INFO, logger="sst2.serve.access")
    with client_for(create_app(PoisonClassifier(), LIMITS)) as client:
        given = client.post("/predict", json={"texts": ["good", "fine"]}, headers={"X-Request-ID": "abc-123"})
        made = client.get("/health")
        forged = client.get("/health", headers={"X-Request-ID": "evil\tid " + "x" * 200})
        records = _access_records(caplog, 3)
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"] != "abc-123"
    assert len(forged.headers["x-request-id"]) == 32  # an id unsafe to log is replaced
    assert [r.levelno for r in records] == [logging.INFO] * 3
    line = records[0].getMessage()
    assert line.startswith("POST /predict 200 texts=2 latency_ms=") and line.endswith(" request_id=abc-123")
    assert (records[0].method, records[0].path, records[0].status, records[0].texts) == ("POST", "/predict", 200, 2)
    assert records[1].getMessage().startswith("GET /health 200 texts=0 latency_ms=")
    assert records[1].request_id == made.headers["x-request-id"]


def test_configure_logging_shows_the_access_log_only_from_info():
    from sst2.serving.metrics import configure_logging

    logger = logging.getLogger("sst2.serve")
    saved = logger.level, logger.propagate, list(logger.handlers)
    try:
        configure_logging("warning")
        assert not logging.getLogger("sst2.serve.access").isEnabledFor(logging.INFO)
        configure_logging("info")
        assert logging.getLogger("sst2.serve.access").isEnabledFor(logging.INFO)
        assert len(logger.handlers) == len(saved[2]) + 1  # one handler, however often it is called
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]


def _samples(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_in_prometheus_format_per_app_registry():
    fake = PoisonClassifier()
    other = create_app(PoisonClassifier(), LIMITS)  # a second app in the process: its own registry, no clash
    with client_for(create_app(fake, LIMITS)) as client:
        for texts in (["good"], ["good", "bad"], ["fine", "dull", "flat"]):
            assert client.post("/predict", json={"texts": texts}).status_code == 200
        assert client.post("/predict", json={"texts": []}).status_code == 422
        assert client.post("/predict", json={"texts": ["POISON"]}).status_code == 500
        assert client.get("/nowhere").status_code == 404
        r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
    m = _samples(r.text)
    assert m[("sst2_requests_total", (("path", "/predict"), ("status", "200")))] == 3
    assert m[("sst2_requests_total", (("path", "/predict"), ("status", "422")))] == 1
    assert m[("sst2_requests_total", (("path", "/predict"), ("status", "500")))] == 1
    assert m[("sst2_requests_total", (("path", "other"), ("status", "404")))] == 1
    assert m[("sst2_request_seconds_count", (("path", "/predict"),))] == 5
    assert m[("sst2_texts_total", ())] == 6
    assert m[("sst2_errors_total", (("kind", "client"),))] == 2
    assert m[("sst2_errors_total", (("kind", "server"),))] == 1
    assert m[("sst2_errors_total", (("kind", "model"),))] == 1
    calls = len(fake.batches) - 1  # the failed call is not a batch served
    assert m[("sst2_batch_size_texts_count", ())] == calls and m[("sst2_batch_size_texts_sum", ())] == 6
    assert m[("sst2_model_seconds_count", ())] == calls
    assert other.state.metrics.registry is not create_app(fake, LIMITS).state.metrics.registry



@pytest.mark.parametrize("workers", [1, 2])
def test_micro_batcher_runs_as_many_batches_at_once_as_workers(workers):
    running, most = [0], [0]
    lock = threading.Lock()

    class Overlap:
        def predict_details(self, texts):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return [Prediction("positive", {"negative": 0.0, "positive": 0.5}, False) for _ in texts]

    async def run():
        batcher = MicroBatcher(Overlap(), Limits(max_batch=64, max_wait_ms=0, workers=workers))
        batcher.start()
        # all six are queued before the worker runs: one batch, which two free workers share
        results = await asyncio.gather(*(batcher.predict(["x" * (i + 1)]) for i in range(6)))
        await batcher.stop()
        return results, batcher.batches

    results, batches = asyncio.run(run())
    assert len(results) == 6 and batches == workers
    assert most[0] == workers  # one batch at a time by default; with 2 workers, two halves side by side


def test_split_shares_a_batch_in_groups_of_similar_length_keeping_requests_whole():
    from sst2.serving.batcher import _split

    items = [(["a" * n for n in lengths], name) for lengths, name in
             [([9], "r9"), ([1], "r1"), ([5, 2], "r5"), ([7], "r7"), ([3], "r3")]]
    assert [[name for _, name in g] for g in _split(items, 2)] == [["r1", "r3", "r5"], ["r7", "r9"]]
    assert _split(items, 1) == [items]
    assert [len(g) for g in _split(items[:1], 2)] == [1]
    big = [(["a"], "a"), (["b"], "b"), (["c"] * 10, "c")]  # one request holds most texts: fewer groups
    assert [[name for _, name in g] for g in _split(big, 3)] == [["a", "b", "c"]]


def test_micro_batcher_gives_back_workers_a_batch_could_not_use():
    fake = RecordingClassifier()

    async def run():
        batcher = MicroBatcher(fake, Limits(max_batch=64, max_wait_ms=0, workers=3))
        batcher.start()
        for _ in range(3):  # each round: 3 free workers, but only one group (a request holds most texts)
            await asyncio.wait_for(asyncio.gather(batcher.predict(["a"]), batcher.predict(["b"]),
                                                  batcher.predict(["c"] * 10)), timeout=5)
        await batcher.stop()

    asyncio.run(run())
    assert fake.batches == [12, 12, 12]


class NaNClassifier:
    """Stands in for a model whose weights are not finite numbers: every probability is NaN."""

    def predict_details(self, texts):
        return [Prediction("positive", {"negative": float("nan"), "positive": float("nan")}, False) for t in texts]


def test_a_model_giving_nan_is_a_json_500_counted_as_a_model_error():
    with client_for(create_app(NaNClassifier(), LIMITS)) as client:
        r = client.post("/predict", json={"texts": ["good"]})
        m = _samples(client.get("/metrics").text)
    # was a plain-text 500 ("Internal Server Error": NaN is no JSON), without X-Request-ID, not counted
    assert (r.status_code, r.json()) == (500, {"detail": "the model failed on this request (RuntimeError); the "
                                                         "server log has the details"})
    assert "x-request-id" in r.headers and m[("sst2_errors_total", (("kind", "model"),))] == 1


def test_serve_refuses_a_model_giving_nan_before_it_listens(tiny_model_dir, tmp_path, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from sst2.cli import main

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    head = {k: torch.full_like(v, float("nan")) for k, v in load_file(model / "head.safetensors").items()}
    save_file(head, model / "head.safetensors")
    assert main(["serve", "--model-dir", str(model), "--port", "0", "--threads", "1"]) == 2
    assert capsys.readouterr().err.strip() == (f"sst2 serve: error: {model}: the model gave a probability of nan "
                                               f"(its weights are not finite numbers); retrain or re-export it")
