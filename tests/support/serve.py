"""`fashion-cir serve` started as a person starts it, and the search answer the page must agree with: shared by
the browser tests on the demo index and on the real catalogue photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.captioning.vllm_server import free_port

FASHION_CIR = [sys.executable, "-m", "pipeline.cli"]
REPO = Path(__file__).resolve().parents[2]
# True once exactly k result thumbnails are on the page and every one of them has decoded.
RESULTS_LOADED = """(k) => {
  const images = [...document.querySelectorAll('#results .hit img')];
  return images.length === k && images.every((image) => image.complete && image.naturalWidth > 0);
}"""


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    """Poll /health until the server answers; fail with its log if it dies or never comes up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"fashion-cir serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"fashion-cir serve did not answer /health within {seconds} s:\n{log.read_text()}")


@contextmanager
def serving(root: Path, log: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`fashion-cir serve --root ROOT [options]` on a free loopback port (with `env` added to the environment);
    its URL while the block runs, stopped after."""
    port = free_port()
    with open(log, "w") as output:
        process = subprocess.Popen([*FASHION_CIR, "serve", "--root", str(root), "--port", str(port), *options],
                                   cwd=REPO, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def cli_answer(root: Path, reference: str, text: str, k: int) -> dict:
    """What `fashion-cir search --json` answers for the same query."""
    result = subprocess.run([*FASHION_CIR, "search", "--root", str(root), "--image", reference, "--text", text,
                             "--k", str(k), "--json"], capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def search_from_gallery(tab, url: str, reference: str, text: str, k: int) -> list[str]:
    """Pick `reference` in the page's gallery, type `text`, search; the names of the k results once all loaded."""
    tab.goto(url)
    tab.wait_for_selector("#gallery .thumb img")
    tab.fill("#gallery-q", reference.lower())
    tab.click(f'#gallery .thumb[data-name="{reference}"]')
    assert tab.text_content("#ref-label") == reference
    tab.fill("#text", text)
    if k != 10:
        tab.fill("#k", str(k))
    tab.click("#submit")
    tab.wait_for_function(RESULTS_LOADED, arg=k)
    return tab.eval_on_selector_all("#results .hit", "cards => cards.map(card => card.dataset.name)")
