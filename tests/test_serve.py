"""``sst2 serve``: a real uvicorn server on 127.0.0.1 (free port) with valid and invalid requests, and the
micro-batcher on its own."""

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sst2.errors import UserError
from sst2.inference.classifier import Classifier, Prediction
from sst2.serving.app import Limits, MicroBatcher, create_app

LIMITS = Limits(max_texts=4, max_chars=300, max_batch=8, max_wait_ms=5)
LONG = " ".join(["the film is good and"] * 12)  # 60 words, 240 characters: over max_length 32 tokens


@pytest.fixture(scope="module")
def clf(tiny_model_dir):
    return Classifier.load(tiny_model_dir, threads=1)


@pytest.fixture(scope="module")
def server(clf):
    """Yields an HTTP client for a uvicorn server running ``create_app`` in a background thread."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; the server inherits the bound socket
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(clf, LIMITS), log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    srv.should_exit = True
    thread.join(10)
    sock.close()


def test_health(server):
    r = server.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["runtime"] == "torch" and body["max_length"] == 32
    assert body["limits"] == {"max_texts": 4, "max_chars": 300}


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
    (b'["good"]', 422, 'expected a JSON object {"texts"'),
    (b'{"texts": "good"}', 422, "'texts' must be a list of strings, got str"),
    (b'{"texts": []}', 422, "'texts' is empty"),
    (b'{"texts": ["good", 3]}', 422, "texts[1] must be a string, got int"),
    (b'{"texts": ["good", null]}', 422, "texts[1] must be a string, got NoneType"),
    (b'{"texts": ["good", "  "]}', 422, "texts[1] is empty"),
    (b'{"texts": ["a", "b", "c", "d", "e"]}', 413, "too many texts: 5 (limit 4 per request)"),
    (b'{"texts": ["' + b"x" * 301 + b'"]}', 413, "texts[0] is too long: 301 characters (limit 300)"),
    (b'{"texts": ["' + b"x" * 20000 + b'"]}', 413, "request body too large"),
])
def test_invalid_requests_get_a_clear_4xx_and_the_server_keeps_serving(server, body, status, message):
    r = server.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert message in r.json()["detail"]
    ok = server.post("/predict", json={"texts": ["good film"]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


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
