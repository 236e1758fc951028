"""Debian's Chromium driven by Playwright (no `playwright install`), for the tests that use a page the way a
person does: every request the page makes is checked against what it may reach, and screenshots are kept in
/tmp/screens/ as well, for a person to look at."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest

from pipeline.paths import Paths

CHROMIUM = Path("/usr/bin/chromium")
SCREENS = Path("/tmp/screens")
# Without the background-networking flags Chromium tries to reach Google's hosts at every start; as root it needs
# --no-sandbox.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def only_localhost(url: str) -> bool:
    """Whether a page may load `url`: data and blob URLs, and this machine's servers, nothing off-site."""
    parts = urlsplit(url)
    return parts.scheme not in ("http", "https", "ws", "wss") or parts.hostname in LOCAL_HOSTS


def playwright_api() -> ModuleType:
    """playwright.sync_api, or a skip with its reason; with REQUIRE_BROWSER set (CI installs both), a failure."""
    if os.environ.get("REQUIRE_BROWSER") and not CHROMIUM.is_file():
        pytest.fail(f"REQUIRE_BROWSER is set but {CHROMIUM} is missing (apt-get install -y chromium)")
    api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                           "(pip install -e '.[test]')")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)
    return api


@contextmanager
def browser_page(allowed: Callable[[str], bool], width: int = 1400, height: int = 900,
                 offline: bool = False) -> Iterator[tuple]:
    """A fresh headless page that may load only the URLs `allowed` accepts; with the URLs it was refused and the
    errors it logged."""
    api = playwright_api()
    refused, errors = [], []

    def guard(route) -> None:
        if allowed(route.request.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height}, offline=offline)
        context.route("**/*", guard)
        tab = context.new_page()
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        try:
            yield tab, refused, errors
        finally:
            browser.close()


def screenshot(tab, tmp_path: Path, name: str) -> Path:
    """Full-page screenshot in tmp_path, copied to /tmp/screens/."""
    path = tmp_path / name
    tab.screenshot(path=str(path), full_page=True)
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS / name)
    return path


def shown_recall(tab) -> dict[str, list[str]]:
    """The page's recall-in-context table: per row (category or average), its cells as drawn."""
    tab.wait_for_selector("#recall-table")
    rows = tab.eval_on_selector_all("#recall-table tbody tr", "rows => rows.map(row => [row.dataset.category, "
                                    "[...row.querySelectorAll('td')].map(cell => cell.textContent)])")
    return dict(rows)


def to_fixed(value: float) -> str:
    """JavaScript's `value.toFixed(1)`: the float's exact value rounded half up (Python's format rounds half to
    even, so 41.25 would be 41.2 here and 41.3 on the page)."""
    return str(Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def expected_recall(paths: Paths) -> dict[str, list[str]]:
    """What that table must show for metrics/eval_context.json: gallery, queries, then R@10 and R@50 each as the
    model's, stage 1's and chance."""
    context = json.loads(paths.eval_context.read_text())
    rows = {}
    labels = {"macro": "macro average", "over_queries": "average over queries",
              "macro_without_small": "macro average, small galleries left out"}
    blocks = [(name, c) for name, c in context.items() if name != "average"]
    blocks += [(labels[key], c) for key, c in context["average"].items() if c["categories"]]
    for name, c in blocks:
        rows[name] = [str(c.get("gallery", f"{c.get('categories')} categories")), str(c["queries"]),
                      *[to_fixed(value) for k in ("R@10", "R@50")
                        for value in (c[k], c["stage1_sum"][k], c["chance"][k])]]
    return rows
