"""Wall time of every DVC stage, forced to run in DAG order: where the demo's minutes go.

    python benchmarks/stage_times.py                       # one markdown row per stage; run from the repository root
    python benchmarks/stage_times.py --breakdown           # and where each stage's seconds go (stage_phases.py)
    python benchmarks/stage_times.py --warm                # the stages forked from one warm interpreter
    python benchmarks/stage_times.py --repo /tmp/copy --stages stage1 embed --jsonl times.jsonl

Each stage is run with `dvc repro --force --single-item <stage>`, so the time includes DVC's own work and the
stage's Python start-up (imports of torch and open_clip), as it does in a real `dvc repro`. With `--breakdown` a
`python` on DVC's PATH runs the stage through benchmarks/stage_phases.py under `-X importtime`, in the same process
DVC would start, and the row splits the wall time into DVC's share, start-up and imports (the largest packages
named), CUDA's initialisation, model building and loading, reading, writing, validation, DVCLive, compiling and
the stage's own compute. `fixed` is everything but compute: what a stage costs however little it computes. With
`--warm` every stage is handed to one warm server, as under `fashion-cir warm -- dvc repro` (pipeline/warm.py); the
server's own start is timed once, before the first stage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import yaml

from common import append_result, markdown_table
from pipeline.warm import SOCKET_VARIABLE, warm_server

PHASES = ["cuda", "model", "read", "write", "validate", "dvclive", "compile", "compute"]
SHIM = """#!/bin/sh
# benchmarks/stage_times.py --breakdown: stage modules run through stage_phases.py, anything else as usual.
if [ "$1" = "-m" ] && [ "${{2#stages.}}" != "$2" ]; then
  STAGE_PHASES_T0=$(date +%s.%N) exec "{python}" -X importtime "{runner}" --out "{records}/$2.json" "$@" \\
    2>"{records}/$2.stderr"
fi
exec "{python}" "$@"
"""


def dag_stages(repo: Path) -> list[str]:
    """The stages of `repo`'s dvc.yaml, in the file's order (the DAG's)."""
    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def top_imports(stderr: str, count: int = 3) -> list[tuple[str, float]]:
    """The `count` packages whose modules took longest to import, from `-X importtime` lines: each module's own
    time (without the imports nested in it) counts to its top-level package; the project's `pipeline` and
    `stages` are left out."""
    seconds: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| +(\S+)$", line)
        if match:
            seconds[match.group(2).split(".")[0]] += int(match.group(1)) / 1e6
    own = {"pipeline", "stages"}
    return sorted(((p, s) for p, s in seconds.items() if p not in own), key=lambda item: -item[1])[:count]


def run_stage(stage: str, repo: Path, env: dict[str, str], records: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage], cwd=repo,
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        stderr = records / f"stages.{stage}.stderr"  # with --breakdown the stage's own stderr is here
        own = "\n".join(line for line in stderr.read_text(errors="replace").splitlines()
                        if not line.startswith("import time:")) if stderr.is_file() else ""
        raise SystemExit(f"{stage} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}\n{own[-3000:]}")
    return time.perf_counter() - start


def breakdown_row(stage: str, wall: float, started: float, records: Path) -> dict:
    """One stage's seconds by phase, from stage_phases.py's JSON and the stage's `-X importtime` lines."""
    module = f"stages.{stage}"
    record = json.loads((records / f"{module}.json").read_text())
    stderr = (records / f"{module}.stderr").read_text(errors="replace")
    phases = record["phases"]
    row = {"stage": stage, "wall": wall, "dvc": wall - record["main"] - record["imports"] - record["start"],
           "start": record["start"], "imports": record["imports"], **{p: phases.get(p, 0.0) for p in PHASES},
           "top_imports": top_imports(stderr), "dvc_before": record["launched"] - started}
    row["fixed"] = wall - row["compute"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the DVC repository (default: here)")
    parser.add_argument("--stages", nargs="+", help="default: every stage of dvc.yaml, in order")
    parser.add_argument("--breakdown", action="store_true", help="split each stage's time into phases")
    parser.add_argument("--warm", action="store_true", help="run the stages through one warm server")
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per stage to this file")
    args = parser.parse_args()
    if args.warm and args.breakdown:
        parser.error("--breakdown starts each stage in its own interpreter to time its imports; it cannot be --warm")
    repo = args.repo.resolve()
    stages = args.stages or dag_stages(repo)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    with tempfile.TemporaryDirectory(prefix="stage-times-") as scratch, ExitStack() as server:
        records = Path(scratch)
        if args.breakdown:
            shim = records / "bin" / "python"
            shim.parent.mkdir()
            shim.write_text(SHIM.format(python=sys.executable, records=records,
                                        runner=Path(__file__).resolve().parent / "stage_phases.py"))
            shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            env["PATH"] = f"{shim.parent}{os.pathsep}{env['PATH']}"
        if args.warm:
            start = time.perf_counter()
            address = server.enter_context(warm_server())
            if address is None:
                raise SystemExit("--warm: the warm server did not start (its error is above)")
            env[SOCKET_VARIABLE] = address
            started = time.perf_counter() - start
            print(f"warm server: {started:.1f} s to start", flush=True)
            if args.jsonl:
                append_result(args.jsonl, {"benchmark": "warm_server", "wall": started})
        rows = []
        for stage in stages:
            started = time.time()
            wall = run_stage(stage, repo, env, records)
            row = (breakdown_row(stage, wall, started, records) if args.breakdown
                   else {"stage": stage, "wall": wall, "warm": args.warm})
            rows.append(row)
            print(f"{stage}: {wall:.1f} s" + (f" (fixed {row['fixed']:.1f} s)" if args.breakdown else ""), flush=True)
            if args.jsonl:
                append_result(args.jsonl, {"benchmark": "stage_times", **row})
    print()
    total = sum(row["wall"] for row in rows)
    if not args.breakdown:
        print(markdown_table(["stage", "seconds"], [[r["stage"], f"{r['wall']:.1f}"] for r in rows]
                             + [["**total**", f"**{total:.1f}**"]]))
        return
    header = ["stage", "wall s", "fixed s", "DVC + exit", "start + imports (largest)", *PHASES]
    table = [[r["stage"], f"{r['wall']:.1f}", f"{r['fixed']:.1f}", f"{r['dvc']:.1f}",
              f"{r['start'] + r['imports']:.1f} (" + ", ".join(f"{n} {s:.1f}" for n, s in r["top_imports"]) + ")",
              *[f"{r[p]:.1f}" for p in PHASES]] for r in rows]
    table.append(["**total**", f"**{total:.1f}**", f"**{sum(r['fixed'] for r in rows):.1f}**", *[""] * 10])
    print(markdown_table(header, table))


if __name__ == "__main__":
    main()
