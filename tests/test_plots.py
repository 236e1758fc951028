"""`fashion-cir plots` on the tiny DAG's run: one page with every plot that renders with no network, a PNG per
chart made without a browser, the example-retrievals picture, and a comparison of two revisions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from pipeline.config import read_yaml
from pipeline.paths import Paths
from tests.conftest import REPO
from tests.support.browser import browser_page, screenshot

pytestmark = pytest.mark.e2e

PLOTS = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in read_yaml(REPO / "dvc.yaml")["plots"]]
CHARTS = [plot for plot in PLOTS if not plot.endswith(".png")]


def plots(root: Path, *revisions: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "plots", "--root", str(root), *revisions],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def report(tiny_repo: Path) -> Path:
    result = plots(tiny_repo)
    assert result.returncode == 0, result.stderr
    return Paths(tiny_repo).plots_report


def test_a_png_per_chart_rendered_without_a_browser(report: Path):
    for chart in CHARTS:
        png = report / f"{chart.replace(' ', '_')}.png"
        pixels = np.asarray(Image.open(png).convert("L"))
        assert pixels.shape[0] > 100 and (pixels < 128).mean() > 0.005, f"{png} looks blank"


def test_evaluate_draws_example_retrievals(tiny_repo: Path, report: Path):
    grid = Image.open(Paths(tiny_repo).retrieval_grid)
    assert grid.width > 600 and grid.height > 100
    assert any(path.name.endswith("retrievals.png") for path in report.iterdir())


def _rendered(page_url: str, tmp_path: Path, name: str) -> dict:
    """Open a page in headless Chromium that may load nothing from a network; what rendered."""
    with browser_page(lambda url: urlsplit(url).scheme == "file", height=1000, offline=True) as (tab, refused, errors):
        tab.goto(page_url)
        tab.wait_for_function(f"document.querySelectorAll('svg, canvas').length >= {len(CHARTS)}", timeout=30000)
        screenshot(tab, tmp_path, name)
        charts = tab.evaluate("[...document.querySelectorAll('body > div')].map("
                              "d => d.querySelectorAll('svg, canvas').length + d.querySelectorAll('img').length)")
    return {"tried": refused, "errors": errors, "charts": charts}


def test_the_page_renders_every_plot_offline(report: Path, tmp_path: Path):
    seen = _rendered((report / "index.html").as_uri(), tmp_path, "plots.png")
    assert seen["tried"] == [] and seen["errors"] == []
    assert len(seen["charts"]) == len(PLOTS) and all(n >= 1 for n in seen["charts"])
    shot = np.asarray(Image.open(tmp_path / "plots.png").convert("L"))
    assert (shot < 200).mean() > 0.01  # lines, axes and labels drawn, not a white page


def test_two_revisions_compare_in_one_page(tiny_repo: Path, tmp_path: Path):
    result = plots(tiny_repo, "HEAD")  # the workspace against the committed run
    assert result.returncode == 0, result.stderr
    page = (Paths(tiny_repo).plots_report / "index.html").read_text()
    assert '"rev": "HEAD"' in page and '"rev": "workspace"' in page
    seen = _rendered((Paths(tiny_repo).plots_report / "index.html").as_uri(), tmp_path, "plots-diff.png")
    assert seen["tried"] == [] and seen["errors"] == []


def test_no_plot_data_is_one_sentence(tmp_path: Path):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    result = plots(tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert json.dumps(result.stderr).count("\\n") == 1
