"""`fashion-cir plots`: every plot dvc.yaml declares, readable without a network.

`dvc plots show` writes a page that loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline it is blank. This
renders the same page through DVC itself (`dvc plots show`, or `dvc plots diff <revisions>` to compare runs) with an
HTML template that carries those libraries inline (vl-convert's bundle), and renders each chart to a PNG with
vl-convert (no browser): `plots/report/index.html` and `plots/report/<plot>.png`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import vl_convert

from pipeline.errors import PipelineError
from pipeline.io import atomic_path

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fashion-cir plots</title>
<style>body { font-family: sans-serif; margin: 16px; } body > div { display: inline-block; margin: 8px; }
img { max-width: 100%; }</style>
<script>BUNDLE</script></head>
<body>{plot_divs}</body></html>
"""


def _dvc(arguments: list[str], root: Path) -> str:
    """`dvc <arguments>` in `root`, with this environment's DVC; its own message as one sentence if it fails."""
    result = subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["(no message)"])[-1].removeprefix("ERROR: ")
        raise PipelineError(f"`dvc {' '.join(arguments)}` failed in {root}: {message}")
    return result.stdout


def plot_specs(root: Path, revisions: list[str], out_dir: Path) -> dict[str, list[dict]]:
    """DVC's rendering of every plot: {plot name: [{"type": "vega", "content": spec} | {"type": "image", "url":
    the image copied into `out_dir`}]}."""
    command = ["plots", "diff", *revisions] if revisions else ["plots", "show"]
    return json.loads(_dvc([*command, "--json", "-o", str(out_dir)], root)).get("data", {})


def file_name(plot: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", plot).strip("_") or "plot"


def render_plots(root: Path, out_dir: Path, revisions: list[str]) -> list[Path]:
    """The offline page and one PNG per chart (images are copied as they are) in `out_dir`, whole or not at all."""
    with atomic_path(out_dir) as tmp, tempfile.TemporaryDirectory() as scratch:
        specs = plot_specs(root, revisions, Path(scratch) / "json")
        if not specs:
            raise PipelineError(f"DVC found no plot data in {root}; run `dvc repro` first.")
        template = Path(scratch) / "template.html"
        template.write_text(TEMPLATE.replace("BUNDLE", vl_convert.javascript_bundle()))  # DVC fills {plot_divs}
        command = ["plots", "diff", *revisions] if revisions else ["plots", "show"]
        _dvc([*command, "--html-template", str(template), "-o", str(tmp)], root)
        written = [tmp / "index.html"]
        for plot, items in specs.items():
            for number, item in enumerate(items):
                suffix = f"-{number}" if len(items) > 1 else ""
                if item["type"] == "vega":
                    path = tmp / f"{file_name(plot)}{suffix}.png"
                    path.write_bytes(vl_convert.vegalite_to_png(item["content"], scale=2))
                    written.append(path)
                elif item["type"] == "image" and Path(item["url"]).is_file():
                    path = tmp / Path(item["url"]).name
                    shutil.copyfile(item["url"], path)
                    written.append(path)
    return [out_dir / path.name for path in written]
