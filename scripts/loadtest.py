"""Loopback load test of ``sst2 serve``: N concurrent clients each send R sequential ``POST /predict``
requests (one SST-2 dev sentence each); reports p50/p95 latency, requests per second and errors as JSON.

With ``--wrk``, the C load generator ``wrk`` drives each ``--connections`` level for ``--duration``
seconds instead (the Python client would be the bottleneck at hundreds of connections), while
``hey`` probes ``GET /health`` at a fixed low rate; it also reports the server's RSS before and after
each level and, in the same run, the in-process throughput of the classifier
(``SentimentClassifier.from_pretrained(model_dir, runtime).predict_details(dev texts)``) to compare against.

Bounded by design: the target must be a loopback address, and the whole run has a deadline.
Either starts a server itself (``--model-dir``, on a free 127.0.0.1 port, stopped afterwards) or
targets a running one (``--url``).

    python scripts/loadtest.py --model-dir runs/efficient/model --runtime onnx-int8
    python scripts/loadtest.py --url http://127.0.0.1:8000
    python scripts/loadtest.py --model-dir runs/efficient/model --runtime onnx-int8 --wrk \\
        --connections 1 16 64 256 --duration 12
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
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
           "--host", "127.0.0.1", "--port", str(port), "--max-batch", str(args.max_batch)]
    if args.max_wait_ms is not None:
        cmd += ["--max-wait-ms", str(args.max_wait_ms)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
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

WRK_SCRIPT = """
local bodies, i = {}, 0
for line in io.lines(os.getenv("SST2_LOADTEST_BODIES")) do bodies[#bodies + 1] = line end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, "/predict", nil, bodies[i])
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * _UNITS[unit]


def parse_wrk(out: str) -> dict:
    """Requests/s, latency percentiles (ms) and error counts from ``wrk --latency`` output."""
    pct = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M)}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "latency_p50_ms": pct[50], "latency_p90_ms": pct[90], "latency_p99_ms": pct[99],
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0}


def parse_hey_csv(out: str) -> dict:
    """Latency percentiles (ms) and status counts from ``hey -o csv`` (one row per request)."""
    rows = [line.split(",") for line in out.strip().splitlines()[1:] if line]
    lat = np.asarray([float(r[0]) * 1000 for r in rows]) if rows else np.asarray([np.nan])
    return {"requests": len(rows), "non_200": sum(r[6] != "200" for r in rows),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2), "latency_max_ms": round(float(lat.max()), 2)}


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def cpu_seconds(pid: int | None) -> dict:
    """CPU seconds so far: the whole machine (busy, from /proc/stat), the server ``pid``, this process
    and its finished children (wrk, hey). Their differences over a level tell how much CPU other
    processes on the machine took meanwhile."""
    import resource

    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    server = 0.0
    if pid is not None:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        server = (int(fields[11]) + int(fields[12])) / tick
    own = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"machine": (user + nice + system + irq + softirq + steal) / tick, "server": server, "own": own}


def inprocess_throughput(args, texts: list[str], repeats: int = 5) -> dict:
    """Median sentences/s of ``SentimentClassifier.from_pretrained(model_dir, runtime).predict_details(texts)``
    (the call the server makes) in this process, with the classifier's defaults (the reference the server's
    throughput is compared to), and the CPU other processes than this one took meanwhile (the idle server's
    included)."""
    from sst2 import SentimentClassifier

    clf = SentimentClassifier.from_pretrained(args.model_dir, runtime=args.runtime)
    clf.predict_details(texts[:64])  # warm-up
    rates, cpu0, t0 = [], cpu_seconds(None), time.perf_counter()
    for _ in range(repeats):
        t1 = time.perf_counter()
        clf.predict_details(texts)
        rates.append(len(texts) / (time.perf_counter() - t1))
    cpu, wall = cpu_seconds(None), time.perf_counter() - t0
    other = (cpu["machine"] - cpu0["machine"] - (cpu["own"] - cpu0["own"])) / wall
    return {"sentences_per_s": round(statistics.median(rates), 1), "other_cpu_cores": round(max(0.0, other), 2)}


def wrk_level(url: str, connections: int, seconds: int, env: dict, lua: str, health_rate: float,
              pid: int | None = None) -> dict:
    """One load level: wrk on ``POST /predict`` plus, alongside, hey on ``GET /health`` at ``health_rate``/s."""
    served0 = httpx.get(f"{url}/health", timeout=10).json()["served"]
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    wrk = subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
                            "-s", lua, url], stdout=subprocess.PIPE, text=True, env=env)
    hey = None
    if health_rate > 0 and shutil.which("hey"):
        time.sleep(0.5)  # probe while the load is on
        hey = subprocess.Popen(["hey", "-z", f"{max(1, seconds - 1)}s", "-c", "1", "-q", str(health_rate),
                                "-o", "csv", f"{url}/health"], stdout=subprocess.PIPE, text=True)
    out, _ = wrk.communicate(timeout=seconds + 60)
    try:
        result = {"connections": connections, **parse_wrk(out)}
    except (AttributeError, KeyError):
        raise SystemExit(f"cannot read wrk's output:\n{out}") from None
    if hey is not None:
        result["health"] = parse_hey_csv(hey.communicate(timeout=seconds + 30)[0])
    served = httpx.get(f"{url}/health", timeout=10).json()["served"]
    cpu, wall = cpu_seconds(pid), time.perf_counter() - t0
    used = {k: (cpu[k] - cpu0[k]) / wall for k in cpu}  # cores
    result["cpu_cores"] = {"server": round(used["server"], 2), "load_generators": round(used["own"], 2),
                           "other_processes": round(max(0.0, used["machine"] - used["server"] - used["own"]), 2)}
    batches, n = served["batches"] - served0["batches"], served["texts"] - served0["texts"]
    result["server_mean_batch_texts"] = round(n / batches, 2) if batches else None
    result["server_model_busy_fraction"] = round((served["model_seconds"] - served0["model_seconds"]) / seconds, 3)
    return result


def run_wrk(args, url: str, texts: list[str], pid: int | None) -> dict:
    if not shutil.which("wrk"):
        raise SystemExit("--wrk needs the wrk load generator (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        bodies, lua = os.path.join(tmp, "bodies.jsonl"), os.path.join(tmp, "predict.lua")
        with open(bodies, "w") as f:
            f.writelines(json.dumps({"texts": [t]}) + "\n" for t in texts)
        with open(lua, "w") as f:
            f.write(WRK_SCRIPT)
        env = {**os.environ, "SST2_LOADTEST_BODIES": bodies}
        inproc = [inprocess_throughput(args, texts)] if args.model_dir else []
        wrk_level(url, 16, 2, env, lua, 0)  # warm-up
        rss0, levels = rss_mb(pid), []
        for c in args.connections:
            level = wrk_level(url, c, args.duration, env, lua, args.health_rate, pid)
            level.update(rss_mb=rss_mb(pid), load_average=[round(x, 2) for x in os.getloadavg()])
            levels.append(level)
            print(json.dumps(level), file=sys.stderr, flush=True)
        if args.model_dir:
            inproc.append(inprocess_throughput(args, texts))
    return {"tool": "wrk", "duration_s": args.duration, "rss_before_mb": rss0,
            "inprocess": inproc, "levels": levels}


def markdown_table(result: dict) -> str:
    # the best of the in-process runs: another process slowing one of them would flatter the server
    ref = max((r["sentences_per_s"] for r in result["inprocess"]), default=None)
    rows = ["| connections | texts/s | % of in-process | p50 ms | p99 ms | errors | /health p99 ms | "
            "mean batch | RSS MB | other CPU |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for lv in result["levels"]:
        share = f"{100 * lv['requests_per_s'] / ref:.0f}%" if ref else "-"
        health = lv.get("health", {}).get("latency_p99_ms")
        rows.append(f"| {lv['connections']} | {lv['requests_per_s']:.1f} | {share} | {lv['latency_p50_ms']:.1f} | "
                    f"{lv['latency_p99_ms']:.1f} | {lv['non_2xx'] + lv['socket_errors']} | "
                    f"{health if health is None else round(health, 1)} | {lv['server_mean_batch_texts']} | "
                    f"{lv['rss_mb']} | {lv['cpu_cores']['other_processes']} |")
    return "\n".join(rows)



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server on a loopback address")
    target.add_argument("--model-dir", help="start 'sst2 serve' on this model directory (127.0.0.1, free port)")
    ap.add_argument("--runtime", default="torch", choices=["torch", "onnx", "onnx-int8"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="server model calls at once (sst2 serve --workers)")
    ap.add_argument("--max-wait-ms", type=float, default=None,
                    help="server micro-batching wait (default: sst2 serve's)")
    ap.add_argument("--max-batch", type=int, default=64, help="server micro-batching: most texts per model call")
    ap.add_argument("--wrk", action="store_true", help="drive the load with wrk, level by level (see above)")
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64, 256], help="--wrk: levels")
    ap.add_argument("--duration", type=int, default=12, help="--wrk: seconds per level")
    ap.add_argument("--health-rate", type=float, default=20, help="--wrk: GET /health probes per second (0: none)")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=10, help="sequential requests per client")
    ap.add_argument("--data", default=None, help="data folder with dev.tsv (the request texts)")
    ap.add_argument("--deadline", type=float, default=300, help="abort the whole run after this many seconds")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not (1 <= args.clients <= 1000 and 1 <= args.requests <= 100):
        ap.error("--clients must be in 1..1000 and --requests in 1..100")
    if not (all(1 <= c <= 1000 for c in args.connections) and 1 <= args.duration <= 60):
        ap.error("--connections must be in 1..1000 and --duration in 1..60 seconds")
    if args.wrk and len(args.connections) * (args.duration + 1) > args.deadline:
        ap.error("--wrk: the levels take longer than --deadline")

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
        if args.wrk:
            result = run_wrk(args, url, texts, proc.pid if proc is not None else None)
        else:
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
    if args.wrk:
        print(markdown_table(result))
        return 0 if all(lv["non_2xx"] + lv["socket_errors"] == 0 for lv in result["levels"]) else 1
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
