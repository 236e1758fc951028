"""`fashion-cir serve` in a real headless browser, used the way a person uses it: find a reference in the gallery,
describe the change, search, see the results load; upload an image; browse the validation queries with the target
outlined. The browser is the system Chromium (no `playwright install`) and may reach only the local server.

Screenshots go to the test's tmp_path and are copied to /tmp/screens/ for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipeline.paths import Paths
from tests.support.browser import browser_page, only_localhost, playwright_api, screenshot
from tests.support.serve import RESULTS_LOADED, cli_answer, search_from_gallery, serving

playwright_api()  # skips the module, with its reason, where the browser or playwright is missing

TEXT = "is red with long sleeves"


@pytest.fixture(scope="module")
def server(search_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`fashion-cir serve` on a free port of this machine, as a person starts it; its URL."""
    with serving(search_root, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


@pytest.fixture
def page(server: str) -> Iterator[tuple]:
    """A fresh browser page that can reach only localhost, with the off-site requests it tried and its errors."""

    with browser_page(only_localhost) as opened:
        yield opened


def next_page(tab) -> None:
    """Click the queries' Next button and wait until the next page is drawn."""
    assert tab.is_enabled("#queries-pager .next"), "no query with its target in the top 10 on any page"
    shown = tab.text_content("#queries-pager .range")
    tab.click("#queries-pager .next")
    tab.wait_for_function("(shown) => document.querySelector('#queries-pager .range').textContent !== shown",
                          arg=shown)


def test_a_person_searches_from_the_gallery_and_by_upload(page: tuple, server: str, search_root: Path,
                                                          tmp_path: Path):
    tab, blocked, errors = page
    reference = str(pd.read_parquet(Paths(search_root).val_rankings)["reference"].iloc[0])
    names = search_from_gallery(tab, server, reference, TEXT, 10)
    expected = cli_answer(search_root, reference, TEXT, 10)
    assert names[0] == expected["hits"][0]["name"] and len(names) == 10 and reference not in names
    assert tab.text_content("#query-text") == expected["query_text"]
    screenshot(tab, tmp_path, "search.png")

    gallery = pd.read_parquet(Paths(search_root).index_dir / "gallery.parquet").set_index("name")
    image = Path(gallery.at[reference, "path"])
    tab.set_input_files("#upload", str(image))
    tab.fill("#k", "5")
    tab.click("#submit")
    tab.wait_for_function(RESULTS_LOADED, arg=5)
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
