"""Wall time of every DVC stage, forced to run in DAG order: where the demo's minutes go.

    python benchmarks/stage_times.py            # prints a markdown table; run from the repository root

Each stage is run with `dvc repro --force --single-item <stage>`, so the time includes the stage's own Python
start-up (imports of torch and open_clip), as it does in a real `dvc repro`.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time

STAGES = ["synthesize", "caption", "triplets", "decode", "stage1", "embed", "mine", "stage2", "evaluate"]


def main() -> None:
    rows = []
    for stage in STAGES:
        start = time.perf_counter()
        subprocess.run(["dvc", "repro", "--force", "--single-item", stage], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        rows.append((stage, time.perf_counter() - start))
        print(f"{stage}: {rows[-1][1]:.1f} s", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| stage | seconds |\n|---|---|")
    for stage, seconds in rows:
        print(f"| {stage} | {seconds:.1f} |")
    print(f"| **total** | **{sum(s for _, s in rows):.1f}** |")


if __name__ == "__main__":
    main()
