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
from tests.support.browser import (
    browser_page,
    expected_recall,
    only_localhost,
    playwright_api,
    screenshot,
    shown_recall,
)
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
    assert shown_recall(tab) == expected_recall(Paths(search_root))
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


@pytest.fixture(scope="module")
def shop_server(shop_search_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`fashion-cir serve` over a shop's catalogue, whose gallery has colour, pattern and price columns."""
    with serving(shop_search_root, tmp_path_factory.mktemp("serve-shop") / "serve.log") as url:
        yield url


def answered(tab, action) -> dict:
    """Run `action` (which submits the search form) and wait for the page to draw the new answer; what it shows."""
    before = tab.text_content("#query-info")
    action()
    tab.wait_for_function("(before) => document.querySelector('#query-info').textContent !== before", arg=before)
    tab.wait_for_function("() => [...document.querySelectorAll('#results .hit img')].every(i => i.complete)")
    return {"kind": tab.text_content("#query-kind"), "filters": tab.text_content("#query-filters"),
            "names": tab.eval_on_selector_all("#results .hit", "cards => cards.map(card => card.dataset.name)"),
            "reference_card": tab.query_selector("#results .reference-card") is not None}


def test_a_person_searches_a_shop_by_text_by_image_and_narrows_it(page: tuple, shop_server: str,
                                                                 shop_search_root: Path, tmp_path: Path):
    """Text alone, then an attribute filter, then one category, then an image alone ("more like this"), as a person
    does it with the page's controls; every result obeys what was asked, checked against the products table."""
    tab, blocked, errors = page
    products = pd.read_parquet(Paths(shop_search_root).index_dir / "gallery.parquet").set_index("name")
    tab.goto(shop_server)
    tab.wait_for_selector("#gallery .thumb img")
    tab.wait_for_selector("#filter-column option[value='colour']", state="attached")
    tab.fill("#text", "a red dress")
    shown = answered(tab, lambda: tab.click("#submit"))
    assert shown["kind"] == "text query" and "every category" in shown["filters"] and len(shown["names"]) == 10
    assert not shown["reference_card"]
    screenshot(tab, tmp_path, "shop-text.png")

    colour = products["colour"].value_counts().index[0]
    tab.select_option("#filter-column", "colour")
    tab.fill("#filter-value", colour)
    tab.click("#add-filter")
    assert tab.text_content("#filters .chip").startswith(f"colour = {colour}")
    shown = answered(tab, lambda: tab.click("#submit"))
    assert f"colour = {colour}" in shown["filters"]
    assert shown["names"] and {products.at[n, "colour"] for n in shown["names"]} == {colour}
    assert len(shown["names"]) == min(10, int((products["colour"] == colour).sum()))
    tab.select_option("#scope", "Shirts")
    shown = answered(tab, lambda: tab.click("#submit"))
    shirts = products[(products["category"] == "Shirts") & (products["colour"] == colour)]
    assert set(shown["names"]) <= set(shirts.index) and len(shown["names"]) == min(10, len(shirts))
    assert "category = Shirts" in shown["filters"]
    screenshot(tab, tmp_path, "shop-filters.png")

    tab.click("#filters .chip button")  # remove the colour filter
    tab.select_option("#scope", "")
    tab.fill("#text", "")
    reference = products.index[products["category"] == "Tops"][0]
    tab.fill("#gallery-q", reference.lower())
    tab.click(f'#gallery .thumb[data-name="{reference}"]')
    shown = answered(tab, lambda: tab.click("#submit"))
    assert shown["kind"] == "image query" and shown["reference_card"] and "category = Tops" in shown["filters"]
    assert reference not in shown["names"] and {products.at[n, "category"] for n in shown["names"]} == {"Tops"}
    screenshot(tab, tmp_path, "shop-image.png")
    assert blocked == [] and errors == []


def test_a_person_gives_the_key_then_finds_an_image_by_its_file_name(page: tuple, search_root: Path,
                                                                     tmp_path: Path):
    """A server with an API key: the page asks for it once, then works as before (thumbnails included); an image
    is found in the gallery by its file name, as a shop's products table writes it."""
    tab, blocked, errors = page
    key = "a-secret-of-the-shop-0123"
    reference = str(pd.read_parquet(Paths(search_root).val_rankings)["reference"].iloc[0])
    gallery = pd.read_parquet(Paths(search_root).index_dir / "gallery.parquet").set_index("name")
    file_name = Path(gallery.at[reference, "path"]).name
    with serving(search_root, tmp_path / "serve.log", env={"FASHION_CIR_API_KEY": key}) as url:
        tab.goto(url)
        tab.wait_for_selector("#key-form", state="visible")
        assert tab.query_selector("#gallery .thumb img") is None  # nothing answered without the key
        screenshot(tab, tmp_path, "key-asked.png")
        tab.fill("#key-input", key)
        tab.click("#key-form button")
        tab.wait_for_selector("#gallery .thumb img")
        assert tab.is_hidden("#key-form")
        tab.fill("#gallery-q", file_name)
        tab.wait_for_function("(name) => { const cards = [...document.querySelectorAll('#gallery .thumb')];"
                              " return cards.length === 1 && cards[0].dataset.name === name; }", arg=reference)
        tab.click(f'#gallery .thumb[data-name="{reference}"]')
        tab.fill("#text", TEXT)
        tab.click("#submit")
        tab.wait_for_function(RESULTS_LOADED, arg=10)
        screenshot(tab, tmp_path, "key-given.png")
    assert blocked == [] and [e for e in errors if "401" not in e] == []  # the first, keyless calls were refused
