"""Loopback load test of ``sst2 serve``: N concurrent clients each send R sequential ``POST /predict``
requests (one SST-2 dev sentence each); reports p50/p95 latency, requests per second and errors as JSON.

Bounded by design: the target must be a loopback address, and the whole run has a deadline.
Either starts a server itself (``--model-dir``, on a free 127.0.0.1 port, stopped afterwards) or
targets a running one (``--url``).

    python scripts/loadtest.py --model-dir runs/efficient/model --runtime onnx-int8
    python scripts/loadtest.py --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "sst2.cli", "serve", "--model-dir", args.model_dir, "--runtime", args.runtime,
           "--host", "127.0.0.1", "--port", str(port), "--max-wait-ms", str(args.max_wait_ms)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with status {proc.returncode}:\n{proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become healthy within 90 s")


async def run_load(url: str, texts: list[str], clients: int, requests: int, timeout: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    # Pooled connections expire well before the server's keep-alive timeout, so the client never
    # reuses one the server is closing.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        r = await http.post("/predict", json={"texts": texts[:1]})  # warm-up, also checks the server works
        r.raise_for_status()
        busy0 = (await http.get("/health")).json().get("served", {}).get("model_seconds", 0)

        async def client(c: int) -> None:
            for i in range(requests):
                text = texts[(c * requests + i) % len(texts)]
                t0 = time.perf_counter()
                try:
                    r = await http.post("/predict", json={"texts": [text]})
                    ok = r.status_code == 200 and len(r.json()["predictions"]) == 1
                    if not ok:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    errors.append(f"{type(exc).__name__}: {exc}")
                if ok:
                    latencies.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        seconds = time.perf_counter() - t0
        health = (await http.get("/health")).json()
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    served = health.get("served", {})
    return {
        "clients": clients, "requests_per_client": requests, "requests": clients * requests,
        "ok": len(latencies), "errors": len(errors), "error_examples": errors[:3],
        "seconds": round(seconds, 3), "requests_per_s": round(clients * requests / seconds, 1),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 2),
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 2),
        "latency_max_ms": round(float(lat.max()), 2),
        "server_runtime": health.get("runtime"),
        "server_mean_batch_texts": round(served["texts"] / served["batches"], 2) if served.get("batches") else None,
        # model time / wall time during the run: near 1 = the model is the bottleneck, low = the HTTP stack
        # or the client (this one shares the machine with the server) is
        "server_model_busy_fraction": round((served.get("model_seconds", 0) - busy0) / seconds, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server on a loopback address")
    target.add_argument("--model-dir", help="start 'sst2 serve' on this model directory (127.0.0.1, free port)")
    ap.add_argument("--runtime", default="torch", choices=["torch", "onnx", "onnx-int8"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="server micro-batching wait")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=10, help="sequential requests per client")
    ap.add_argument("--data", default=None, help="data folder with dev.tsv (the request texts)")
    ap.add_argument("--deadline", type=float, default=300, help="abort the whole run after this many seconds")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not (1 <= args.clients <= 1000 and 1 <= args.requests <= 100):
        ap.error("--clients must be in 1..1000 and --requests in 1..100")

    from sst2.data.splits import read_split, resolve_data_dir

    texts = read_split(resolve_data_dir(args.data) / "dev.tsv", "dev").texts
    proc = None
    if args.url:
        host = urlparse(args.url).hostname
        if host not in LOOPBACK:
            ap.error(f"--url must point at a loopback address ({', '.join(sorted(LOOPBACK))}), got {host}")
        url = args.url.rstrip("/")
    else:
        proc, url = start_server(args)
    try:
        result = asyncio.run(asyncio.wait_for(
            run_load(url, texts, args.clients, args.requests, timeout=args.deadline), args.deadline))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result.update(url=url, started_server=proc is not None, load_average=os.getloadavg())
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
