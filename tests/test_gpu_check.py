"""The prepared GPU check's dry run (benchmarks/gpu_check.sh --dry-run: the CPU, tiny sizes, this checkout's
.venv) runs every part it plans and writes the whole report: the same script the GPU box runs, so a GPU check
is not the first time it runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_check import dry_stages  # noqa: E402

SECTIONS = ["# GPU check (dry-run)", "## Targets", "## Matmul ceiling", "## Mining (mine.py)",
            "## Training step, inputs on the device (train_step.py)", "## End-to-end epoch from JPEG files (epoch.py)",
            "## Gallery embedding (embed.py)",
            "## Evaluation's chunked ranking (rank.py)",
            "## The demo DAG stage by stage (stage_times.py --breakdown)",
            "## The demo DAG stage by stage, warm (stage_times.py --warm)",
            "## Compiled training steps (train_step.py --compile)",
            "## End-to-end epoch, compiled (epoch.py --compile)"]


def test_dry_run_writes_every_section_of_the_report(tmp_path):
    out = tmp_path / "report.md"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                            cwd=tmp_path, env={**env, "FASHION_CIR_DEVICE": "cpu"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    for section in SECTIONS:
        assert section in report, section
    body = report.split("## Matmul ceiling", 1)[1]
    assert body.count(": ok in ") == 8, report  # the eight parts a dry run runs, each ok
    assert report.count("Not run: a compiled part") == 2
    assert "synthesize" in dry_stages() and "decode" not in dry_stages()
    rows = ["| the demo DAG", "(warm: `fashion-cir warm`)", "| mining 200,000", "| stage 1 step",
            "| training from the jpeg store", "| evaluation against 1,000,000 images",
            "| end-to-end triplet", "| gallery embedding"]
    for row in [f"| {stage} |" for stage in dry_stages()] + rows:
        assert row in report, row
    assert "(still running)" not in report
    measured = _measured(report)
    assert set(measured) == {"end-to-end", "stage 1 step", "mining", "the demo DAG", "gallery embedding"}
    assert measured["end-to-end"][0] > 0 and measured["stage 1 step"][0] > 0 and measured["gallery embedding"][0] > 0
    seconds, recall = measured["mining"]
    assert 0 < seconds and recall == 1.0  # exact search on the CPU: the exact neighbours
    total, stages, fixed = measured["the demo DAG"]
    assert stages == len(dry_stages()) and total > 0 and 0 <= fixed <= total
    ceiling = re.search(r"matmul ceiling float32: ([\d.]+) TFLOP/s", report)
    assert ceiling and float(ceiling.group(1)) > 0


NUMBERS = {  # each target row's measured cell: the numbers it must hold
    "end-to-end": r"([\d,]+) triplets/s",
    "stage 1 step": r"([\d,]+) pairs/s",
    "mining": r"([\d.]+) s \(exact torch.*recall ([\d.]+)\)",
    "the demo DAG": r"(\d+) s over (\d+) stages; fixed cost up to ([\d.]+) s",
    "gallery embedding": r"([\d,]+) images/s",
}


def _measured(report: str) -> dict[str, tuple[float, ...]]:
    """The numbers of the report's Targets table, by target (the first cold DAG row only)."""
    table = report.split("## Targets", 1)[1].split("\n## ", 1)[0]
    found: dict[str, tuple[float, ...]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for target, pattern in NUMBERS.items():
            match = re.search(pattern, cells[1]) if len(cells) == 3 and cells[0].startswith(target) else None
            if match and target not in found:
                found[target] = tuple(float(group.replace(",", "")) for group in match.groups())
    return found
