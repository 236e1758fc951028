"""What it takes to run `fashion-cir serve` in production: Prometheus metrics read with prometheus-client's own
parser, readiness apart from liveness, one access-log line per request, an API key beyond loopback, and a SIGTERM
that answers the requests in flight before the process exits."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pipeline.paths import Paths
from pipeline.search.engine import SearchEngine
from pipeline.search.guard import COOKIE, KEY_VARIABLE
from pipeline.search.server import create_app
from tests.support.serve import FASHION_CIR, REPO, wait_until_healthy

KEY = "k" * 24


@pytest.fixture(scope="module")
def engine(search_root: Path) -> SearchEngine:
    return SearchEngine.open(Paths(search_root))


@pytest.fixture(scope="module")
def reference(search_root: Path) -> str:
    return str(pd.read_parquet(Paths(search_root).val_rankings)["reference"].iloc[0])


def samples(client: TestClient, **headers: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics by (name, sorted labels), parsed by prometheus-client."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def test_metrics_count_requests_by_kind_and_time_each_phase(search_root: Path, engine: SearchEngine, reference: str):
    client = TestClient(create_app(Paths(search_root), engine))
    for body in ({"reference": reference, "text": "is red"}, {"text": "a red dress"}, {"reference": reference}):
        assert client.post("/api/search", json=body).status_code == 200
    assert client.post("/api/search", json={"text": ""}).status_code == 400
    seen = samples(client)

    def requests(kind: str, status: str) -> float:
        return seen.get(("fashion_cir_requests_total", (("kind", kind), ("route", "/api/search"),
                                                        ("status", status))), 0)

    assert [requests(kind, "200") for kind in ("composed", "text", "image")] == [1, 1, 1]
    assert requests("", "400") == 1
    for phase in ("parse", "prepare", "encode", "search"):
        assert seen[("fashion_cir_phase_seconds_count", (("phase", phase),))] >= 3, phase
    assert seen[("fashion_cir_batch_queries_count", ())] >= 3
    assert seen[("fashion_cir_gallery_images", ())] == len(engine.gallery)
    assert seen[("fashion_cir_index_info", (("version", engine.version),))] == 1
    assert seen[("fashion_cir_request_seconds_count", (("route", "/api/search"),))] == 4
    assert client.get("/images/no-such-image").status_code == 404
    again = samples(client)
    assert again[("fashion_cir_requests_total", (("kind", ""), ("route", "/images/{name:path}"),
                                                 ("status", "404")))] == 1  # the route's template, not the path
    off = TestClient(create_app(Paths(search_root), engine, metrics=False))
    assert off.get("/metrics").status_code == 404 and off.post("/api/search", json={"text": "a"}).status_code == 200


def test_each_request_is_one_access_log_line(search_root: Path, engine: SearchEngine, reference: str,
                                             caplog: pytest.LogCaptureFixture):
    client = TestClient(create_app(Paths(search_root), engine, metrics=False))
    with caplog.at_level(logging.INFO, logger="fashion_cir.access"):
        client.post("/api/search", json={"reference": reference, "text": "is red"})
        client.get("/health")
    lines = [r.getMessage() for r in caplog.records if r.name == "fashion_cir.access"]
    assert len(lines) == 2
    assert '"POST /api/search" 200' in lines[0] and lines[0].endswith("composed") and " ms" in lines[0]
    assert '"GET /health" 200' in lines[1]


def test_ready_apart_from_health(search_root: Path, engine: SearchEngine):
    stopping = [False]
    client = TestClient(create_app(Paths(search_root), engine, draining=lambda: stopping[0]))
    assert client.get("/ready").json() == {"ready": True, "version": engine.version}
    stopping[0] = True
    answer = client.get("/ready")
    assert answer.status_code == 503 and "stopping" in answer.json()["error"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["version"] == engine.version and health["serving_since"]


def test_with_a_key_only_the_page_and_probes_are_open(search_root: Path, engine: SearchEngine, reference: str):
    client = TestClient(create_app(Paths(search_root), engine, key=KEY))
    for path in ("/health", "/ready", "/", "/static/app.js"):
        assert client.get(path).status_code == 200, path
    for method, path in (("post", "/api/search"), ("get", "/api/gallery"), ("get", "/metrics"),
                         ("get", f"/images/{reference}"), ("get", "/api/filters")):
        answer = getattr(client, method)(path)
        assert answer.status_code == 401 and KEY_VARIABLE in answer.json()["error"], path
        assert answer.json()["error"].endswith(".") and answer.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/api/search", json={"text": "a"}, headers={"Authorization": "Bearer " + "x" * 24})
    assert wrong.status_code == 401
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"Cookie": f"{COOKIE}={KEY}"}):
        assert client.post("/api/search", json={"text": "a red dress"}, headers=headers).status_code == 200, headers
    assert client.get(f"/images/{reference}", headers={"Cookie": f"{COOKIE}={KEY}"}).status_code == 200
    assert samples(client, **{"X-API-Key": KEY})


@pytest.mark.parametrize("key, message", [("", "needs an API key: set FASHION_CIR_API_KEY"),
                                          ("short", "FASHION_CIR_API_KEY is 5 characters long")])
def test_beyond_loopback_a_missing_key_is_one_sentence(search_root: Path, key: str, message: str):
    env = {k: v for k, v in os.environ.items() if k != KEY_VARIABLE} | ({KEY_VARIABLE: key} if key else {})
    done = subprocess.run([*FASHION_CIR, "serve", "--root", str(search_root), "--host", "0.0.0.0", "--port", "9"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 1 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_sigterm_answers_the_request_in_flight_then_exits(search_root: Path, reference: str, tmp_path: Path):
    """A request whose body is half sent when SIGTERM arrives is still answered; no new connection is accepted;
    then the process exits."""
    from pipeline.captioning.vllm_server import free_port

    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen([*FASHION_CIR, "serve", "--root", str(search_root), "--port", str(port)],
                                  cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server, log)
        body = json.dumps({"reference": reference, "text": "is red with long sleeves", "k": 5}).encode()
        connection = socket.create_connection(("127.0.0.1", port), timeout=30)
        connection.sendall(b"POST /api/search HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        time.sleep(0.5)  # the server has the request's head: the request is in flight
        server.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        with socket.socket() as late:
            assert late.connect_ex(("127.0.0.1", port)) != 0  # it stopped listening
        connection.sendall(body[10:])
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        connection.close()
        head, _, content = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:300]
        assert len(json.loads(content)["hits"]) == 5
        # uvicorn re-raises the signal once drained, so the process ends as SIGTERM says, after a clean shutdown
        assert server.wait(timeout=60) == -signal.SIGTERM and "Finished server process" in log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
