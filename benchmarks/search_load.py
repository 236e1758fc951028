"""Load on `fashion-cir serve`: queries/s and latency percentiles at 1, 8 and 32 concurrent clients, with concurrent
queries answered in batches (the default) and one at a time (`--max-batch 1`), on loopback.

    python benchmarks/search_load.py                  # after `dvc repro`: the demo's index and model
    python benchmarks/search_load.py --root R --requests 400 --clients 1 8 32 --max-batch 64 1
    python benchmarks/search_load.py --port 8000      # a server already running on this machine, as it is
    python benchmarks/search_load.py --max-batch 64 --metrics on off --repeats 3   # what /metrics costs

The server is `fashion-cir serve` in its own process; the clients are threads of another process (each with its own
keep-alive connection), each posting composed queries (a gallery reference and a text, as the page sends them: a
multipart form) until the run's request count or time limit is reached. Latency is from the client: sending the
request to reading the whole answer.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pandas as pd
import torch

from common import append_result, describe, markdown_table
from pipeline.captioning.vllm_server import free_port

TEXTS = ["is red with long sleeves", "is darker and shorter", "has a v-neck and no pattern", "is blue instead",
         "has stripes", "is sleeveless and white"]


def form_body(reference: str, text: str) -> tuple[bytes, str]:
    """A multipart form as the page posts it."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             for name, value in (("reference", reference), ("text", text), ("k", "10"))]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def client(port: int, references: list[str], seconds: float, requests: int, seed: int,
           latencies: list[float], failures: list[str], lock: threading.Lock, left: list[int]) -> None:
    """One client: a keep-alive connection posting queries until the shared request count or the time runs out."""
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        with lock:
            if left[0] <= 0:
                break
            left[0] -= 1
        body, kind = form_body(rng.choice(references), rng.choice(TEXTS))
        started = time.perf_counter()
        connection.request("POST", "/api/search", body=body, headers={"Content-Type": kind})
        answer = connection.getresponse()
        payload = answer.read()
        elapsed = time.perf_counter() - started
        with lock:
            if answer.status == 200:
                latencies.append(elapsed)
            else:
                failures.append(payload.decode(errors="replace")[:200])
    connection.close()


def clients_process(port: int, references: list[str], clients: int, seconds: float, requests: int,
                    out: multiprocessing.Queue) -> None:
    """All clients of one run, as threads of this (separate) process; the run's numbers go to `out`."""
    latencies: list[float] = []
    failures: list[str] = []
    lock, left = threading.Lock(), [requests]
    threads = [threading.Thread(target=client, args=(port, references, seconds, requests, seed, latencies, failures,
                                                     lock, left)) for seed in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put({"wall": time.perf_counter() - started, "latencies": latencies, "failures": failures})


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def serving(root: Path, max_batch: int, metrics: bool, port: int) -> subprocess.Popen:
    """`fashion-cir serve` on `port` (with or without /metrics), answering once /health does."""
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--root", str(root), "--port", str(port),
                               "--max-batch", str(max_batch), *([] if metrics else ["--no-metrics"])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"fashion-cir serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("fashion-cir serve did not answer /health within 180 s")


def batches(port: int) -> dict:
    """The server's batching counters (a server without them counts as answering one query at a time)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
        return json.loads(answer.read()).get("batches", {"queries": 0, "answered": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository with index/ and models/")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch", type=int, nargs="+", default=[64, 1], help="server settings to compare")
    parser.add_argument("--metrics", choices=["on", "off"], nargs="+", default=["on"],
                        help="serve /metrics (on) or not (off, --no-metrics); both to compare")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per setting and client count; the median queries/s is reported")
    parser.add_argument("--requests", type=int, default=300, help="requests per run, at most")
    parser.add_argument("--seconds", type=float, default=30, help="time per run, at most")
    parser.add_argument("--port", type=int, help="measure the server already listening on this loopback port")
    parser.add_argument("--jsonl", type=Path)
    args = parser.parse_args()
    gallery = pd.read_parquet(args.root / "index" / "gallery.parquet")
    references = gallery["name"].tolist()
    context = multiprocessing.get_context("spawn")
    print(describe(torch.device("cpu")))
    print(f"gallery {len(gallery)} images ({args.root.resolve()}); {args.requests} requests or {args.seconds:.0f} s "
          f"per run; composed queries as multipart forms; clients in another process, one connection each", flush=True)
    rows = []
    settings = [(None, None)] if args.port else [(b, m == "on") for b in args.max_batch for m in args.metrics]
    for max_batch, metrics in settings:
        port = args.port or free_port()
        server = serving(args.root, max_batch, metrics, port) if max_batch else None
        try:
            for clients in args.clients:
                runs = []
                for _ in range(args.repeats):
                    before = batches(port)
                    out = context.Queue()
                    process = context.Process(target=clients_process, args=(port, references, clients, args.seconds,
                                                                            args.requests, out))
                    process.start()
                    runs.append((out.get(), before, batches(port)))
                    process.join()
                rates = [len(result["latencies"]) / result["wall"] for result, _, _ in runs]
                latencies = [value for result, _, _ in runs for value in result["latencies"]]
                answered_batches = sum(after["answered"] - before["answered"] for _, before, after in runs)
                queries = sum(after["queries"] - before["queries"] for _, before, after in runs)
                record = {"benchmark": "search_load", "device": describe(torch.device("cpu")), "max_batch": max_batch,
                          "metrics": metrics, "clients": clients, "repeats": args.repeats,
                          "requests": len(latencies), "failures": sum(len(r["failures"]) for r, _, _ in runs),
                          "queries_per_s": statistics.median(rates), "p50_ms": 1000 * percentile(latencies, 50),
                          "p99_ms": 1000 * percentile(latencies, 99),
                          "mean_batch": queries / answered_batches if answered_batches else 1.0}
                rows.append(record)
                print(record, flush=True)
                if args.jsonl:
                    append_result(args.jsonl, record)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    print()
    print(markdown_table(["server", "metrics", "clients", "queries/s", "p50 ms", "p99 ms", "mean batch", "answered",
                          "failed"],
                         [[{None: f"the server on port {args.port}", 1: "one at a time"}.get(
                             r["max_batch"], f"batches of up to {r['max_batch']}"),
                           {True: "on", False: "off", None: "-"}[r["metrics"]],
                           r["clients"], f"{r['queries_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                           f"{r['mean_batch']:.1f}", r["requests"], r["failures"]] for r in rows]))


if __name__ == "__main__":
    main()
