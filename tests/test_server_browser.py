"""`fashion-cir serve` in a real headless browser, used the way a person uses it: find a reference in the gallery,
describe the change, search, see the results load; upload an image; browse the validation queries with the target
outlined. The browser is the system Chromium (no `playwright install`) and may reach only the local server.

Screenshots go to the test's tmp_path and are copied to /tmp/screens/ for a person to look at.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest

from pipeline.paths import Paths
from tests.support.browser import browser_page, playwright_api, screenshot

playwright_api()  # skips the module, with its reason, where the browser or playwright is missing

FASHION_CIR = [sys.executable, "-m", "pipeline.cli"]
REPO = Path(__file__).resolve().parents[1]
TEXT = "is red with long sleeves"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
LOADED = """(k) => {
  const images = [...document.querySelectorAll('#results .hit img')];
  return images.length === k && images.every((image) => image.complete && image.naturalWidth > 0);
}"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


@pytest.fixture(scope="module")
def server(search_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`fashion-cir serve` on a free port of this machine, as a person starts it; its URL."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen([*FASHION_CIR, "serve", "--root", str(search_root), "--port", str(port)],
                                   cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def page(server: str) -> Iterator[tuple]:
    """A fresh browser page that can reach only localhost, with the off-site requests it tried and its errors."""

    def local(url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme not in ("http", "https", "ws", "wss") or parts.hostname in LOCAL_HOSTS

    with browser_page(local) as opened:
        yield opened


def next_page(tab) -> None:
    """Click the queries' Next button and wait until the next page is drawn."""
    assert tab.is_enabled("#queries-pager .next"), "no query with its target in the top 10 on any page"
    shown = tab.text_content("#queries-pager .range")
    tab.click("#queries-pager .next")
    tab.wait_for_function("(shown) => document.querySelector('#queries-pager .range').textContent !== shown",
                          arg=shown)


def cli_answer(root: Path, reference: str, text: str, k: int) -> dict:
    """What `fashion-cir search --json` answers for the same query."""
    result = subprocess.run([*FASHION_CIR, "search", "--root", str(root), "--image", reference, "--text", text,
                             "--k", str(k), "--json"], capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def test_a_person_searches_from_the_gallery_and_by_upload(page: tuple, server: str, search_root: Path,
                                                          tmp_path: Path):
    tab, blocked, errors = page
    reference = str(pd.read_parquet(Paths(search_root).val_rankings)["reference"].iloc[0])
    tab.goto(server)
    tab.wait_for_selector("#gallery .thumb img")
    tab.fill("#gallery-q", reference.lower())
    tab.click(f'#gallery .thumb[data-name="{reference}"]')
    assert tab.text_content("#ref-label") == reference
    tab.fill("#text", TEXT)
    tab.click("#submit")
    tab.wait_for_function(LOADED, arg=10)
    names = tab.eval_on_selector_all("#results .hit", "cards => cards.map(card => card.dataset.name)")
    expected = cli_answer(search_root, reference, TEXT, 10)
    assert names[0] == expected["hits"][0]["name"] and len(names) == 10 and reference not in names
    assert tab.text_content("#query-text") == expected["query_text"]
    screenshot(tab, tmp_path, "search.png")

    gallery = pd.read_parquet(Paths(search_root).index_dir / "gallery.parquet").set_index("name")
    image = Path(gallery.at[reference, "path"])
    tab.set_input_files("#upload", str(image))
    tab.fill("#k", "5")
    tab.click("#submit")
    tab.wait_for_function(LOADED, arg=5)
    assert "the uploaded image" in tab.text_content("#query-info")
    assert tab.text_content("#query-text") == "Is red with long sleeves"  # an upload has no caption to append
    screenshot(tab, tmp_path, "search-upload.png")
    assert blocked == [] and errors == []


def test_a_person_browses_validation_queries_with_the_target_marked(page: tuple, server: str, search_root: Path,
                                                                    tmp_path: Path):
    tab, blocked, errors = page
    rankings = pd.read_parquet(Paths(search_root).val_rankings)
    tab.goto(server)
    tab.click("#nav-queries")
    tab.wait_for_selector("#queries .query")
    first = tab.eval_on_selector("#queries .query", "card => card.dataset.triplet")
    worst = rankings.assign(severity=rankings["target_rank"].where(rankings["target_rank"] > 0, 1 << 30))
    assert first == worst.sort_values(["severity", "triplet_id"], ascending=[False, True])["triplet_id"].iloc[0]
    screenshot(tab, tmp_path, "queries-failures.png")
    while not tab.query_selector("#queries .strip .thumb.target"):  # failures come first: page on to a hit
        next_page(tab)
    marked = tab.query_selector("#queries .strip .thumb.target")
    marked.scroll_into_view_if_needed()
    style, width = marked.evaluate("card => [getComputedStyle(card).outlineStyle, getComputedStyle(card).outlineWidth]")
    assert style == "solid" and float(width.removesuffix("px")) >= 3
    triplet = marked.evaluate("card => card.closest('.query').dataset.triplet")
    assert marked.get_attribute("data-name") == rankings.set_index("triplet_id").at[triplet, "target"]
    screenshot(tab, tmp_path, "queries-hit.png")
    assert blocked == [] and errors == []
