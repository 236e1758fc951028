"""The whole DAG at several sizes of the demo catalogue: every stage in DAG order as `dvc repro` runs it, one epoch
per training stage, with each stage's wall time, peak resident memory and disk written, and the slope of each per
image between the two largest sizes (what a million photos costs is extrapolated from the slope).

    python benchmarks/dag_scale.py --scales 1 10 100 --jsonl benchmarks/dag-scale.jsonl
    python benchmarks/dag_scale.py --table benchmarks/dag-scale.jsonl      # the markdown table of recorded runs

Scale s multiplies the demo's families and distractors by s (the demo: 3,900 distinct rendered images; 100x:
390,000), in a copy of this working tree under --work with `stage1.epochs` and `stage2.epochs` at 1; the generated
triplets per category stay as params.yaml says, as a shop's would. Each stage runs as `python -m dvc repro
--single-item <stage>` in its own process; its peak memory is the largest resident set of that process tree (the
rusage of the reaped `dvc`, which covers the stage it started and the decode workers), and its disk is the size of
the outputs it declares plus what it added to DVC's cache.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml
from gpu_check import copy_repository

from common import append_result, markdown_table

DEMO = {"families_train": 150, "families_val": 100, "distractors_val": 300}


def images_at(scale: int, family_size: int = 4, categories: int = 3) -> int:
    """Distinct images of the demo catalogue at `scale`."""
    families = (DEMO["families_train"] + DEMO["families_val"]) * scale
    return categories * (families * family_size + DEMO["distractors_val"] * scale)


def size_of(path: Path) -> int:
    """Bytes of a file or of every file under a folder (0 if absent)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def stage_outputs(repo: Path, stage: str) -> list[Path]:
    entries = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]
    outs = [*entries.get("outs", []), *entries.get("metrics", [])]
    return [repo / (o if isinstance(o, str) else next(iter(o))) for o in outs]


# Run by a fresh interpreter between this process and `dvc`: Linux counts the memory a process had before exec in its
# peak, so a `dvc` forked from this process (torch imported) would report at least this process's size.
LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_stage(repo: Path, stage: str, log: Path) -> tuple[float, int]:
    """(wall seconds, peak resident bytes) of `dvc repro --single-item stage` in `repo`."""
    started = time.perf_counter()
    peak_file = log.with_suffix(".peak")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # its python
    with log.open("ab") as out:
        code = subprocess.call([sys.executable, "-c", LAUNCHER, str(peak_file), sys.executable, "-m", "dvc",
                                "repro", "--single-item", stage], cwd=repo, stdout=out, stderr=subprocess.STDOUT,
                               env=env)
    if code:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{stage} failed at {repo} (exit status {code}):\n{tail}")
    return time.perf_counter() - started, int(peak_file.read_text())


def measure(scale: int, work: Path, jsonl: Path | None) -> list[dict]:
    repo = work / f"x{scale}"
    if repo.exists():
        raise SystemExit(f"{repo} exists; remove it (or pick another --work) to measure {scale}x from scratch.")
    copy_repository(repo, {"synthetic": {k: v * scale for k, v in DEMO.items()}, "stage1": {"epochs": 1},
                           "stage2": {"epochs": 1}})
    stages = list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    rows = []
    print(f"{scale}x: {images_at(scale):,} images, stages {' '.join(stages)}", flush=True)
    for stage in stages:
        cache_before = size_of(repo / ".dvc" / "cache")
        seconds, peak = run_stage(repo, stage, work / f"x{scale}.log")
        row = {"benchmark": "dag_scale", "scale": scale, "images": images_at(scale), "stage": stage,
               "seconds": round(seconds, 2), "peak_rss": peak,
               "outputs": sum(size_of(p) for p in stage_outputs(repo, stage)),
               "cache_added": size_of(repo / ".dvc" / "cache") - cache_before,
               "machine": machine()}
        rows.append(row)
        if jsonl:
            append_result(jsonl, row)
        print(f"  {stage}: {seconds:.1f} s, peak {peak / 2**30:.2f} GiB, outputs {row['outputs'] / 2**20:.1f} MiB",
              flush=True)
    return rows


def machine() -> str:
    from pipeline.training.report import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} cores"


def table(rows: list[dict]) -> str:
    """One row per stage: seconds, peak GiB and disk MiB at each scale, and the per-image slope between the two
    largest scales."""
    scales = sorted({r["scale"] for r in rows})
    at = {(r["scale"], r["stage"]): r for r in rows}
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    header = ["stage", *[f"{s}x s" for s in scales], *[f"{s}x peak GiB" for s in scales],
              f"{scales[-1]}x disk MiB", "ms per image", "KB resident per image", "KB disk per image"]
    body = []
    for stage in stages:
        got = [at.get((s, stage)) for s in scales]
        cells = [stage, *[f"{g['seconds']:.1f}" if g else "-" for g in got],
                 *[f"{g['peak_rss'] / 2**30:.2f}" if g else "-" for g in got]]
        last = got[-1]
        cells.append(f"{(last['outputs'] + last['cache_added']) / 2**20:,.0f}" if last else "-")
        if len(scales) > 1 and got[-1] and got[-2]:
            a, b = got[-2], got[-1]
            images = b["images"] - a["images"]
            cells += [f"{1000 * (b['seconds'] - a['seconds']) / images:.3f}",
                      f"{(b['peak_rss'] - a['peak_rss']) / 1024 / images:.2f}",
                      f"{(b['outputs'] + b['cache_added'] - a['outputs'] - a['cache_added']) / 1024 / images:.2f}"]
        else:
            cells += ["-", "-", "-"]
        body.append(cells)
    totals = ["**total**", *[f"**{sum(at[(s, st)]['seconds'] for st in stages if (s, st) in at):.0f}**"
                             for s in scales], *["" for _ in scales], "", "", "", ""]
    return markdown_table(header, [*body, totals])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fashion-cir-dag-scale"))
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per stage to this file")
    parser.add_argument("--table", type=Path, help="print the table of the runs recorded in this file and stop")
    args = parser.parse_args()
    if args.table:
        rows = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        print(table([r for r in rows if r.get("benchmark") == "dag_scale"]))
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for scale in args.scales:
        rows += measure(scale, args.work, args.jsonl)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
