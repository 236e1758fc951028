"""Run the demo's ablation table with `dvc exp run` over several seeds and print mean +- std per variant.

    python experiments/demo_ablations.py --seeds 0 1 2 --out experiments/ablations.jsonl

Each variant is one `dvc exp run -S ...` on top of the committed params (HEAD:params.yaml); every run names every
param the table varies, with its committed value where the variant leaves it, so runs never inherit each other's
settings from the workspace, and DVC's run cache reuses any stage whose inputs
an earlier run already produced. Results are appended to a JSONL file (resumable: finished runs are skipped).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

VARIANTS: dict[str, dict[str, object]] = {
    "two-stage (full)": {},
    "stage 2 alone (stage1.epochs=0)": {"stage1.epochs": 0},
    "zero-shot static model (no training)": {"stage1.epochs": 0, "stage2.epochs": 0},
    "no hard negatives (negatives.k=0)": {"negatives.k": 0},
    "query-anchored hard negatives (negatives.anchor=query)": {"negatives.anchor": "query"},
    "query-anchored, mined again every epoch (negatives.anchor=query, stage2.remine_every=1)":
        {"negatives.anchor": "query", "stage2.remine_every": 1},
    "no static negatives (stage2.static_negatives=0)": {"stage2.static_negatives": 0},
    "no generated triplets (triplets.generated_per_category=0)": {"triplets.generated_per_category": 0},
    "sum composition (stage2.composition=sum)": {"stage2.composition": "sum"},
    "without reference prompt (triplets.reference_prompt=false)": {"triplets.reference_prompt": False},
    "reference image only (eval.query=image)": {"eval.query": "image"},
    "relative captions only (eval.query=text)": {"eval.query": "text"},
}


def committed_values(keys: set[str]) -> dict[str, object]:
    """The values HEAD's params.yaml gives the dotted `keys` (the workspace copy is changed by each exp run)."""
    params = yaml.safe_load(subprocess.run(["git", "show", "HEAD:params.yaml"], check=True, capture_output=True,
                                           text=True).stdout)
    values = {}
    for key in keys:
        node = params
        for part in key.split("."):
            node = node[part]
        values[key] = node
    return values


def _value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def run(variant: str, seed: int, base: dict[str, object]) -> dict:
    settings = {**base, **VARIANTS[variant], "seed": seed}
    command = ["dvc", "exp", "run"]
    for key, value in settings.items():
        command += ["-S", f"{key}={_value(value)}"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=sys.stdout, stderr=subprocess.STDOUT)
    metrics = json.loads(Path("metrics/eval.json").read_text())
    curve = {str(row["k"]): row["average"] for row in json.loads(Path("plots/recall_at_k.json").read_text())}
    return {"variant": variant, "seed": seed, "command": " ".join(command), "metrics": metrics,
            "recall_at_k": curve}


def table(rows: list[dict]) -> str:
    lines = ["| variant | seeds | R@1 | R@10 | R@50 | mean |", "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        runs = [r for r in rows if r["variant"] == variant]
        if not runs:
            continue
        cells = []
        for key in ("R@1", "R@10", "R@50", "mean"):
            values = [r["recall_at_k"]["1"] if key == "R@1" else r["metrics"]["average"][key] for r in runs]
            mean = statistics.mean(values)
            cells.append(f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}")
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--out", type=Path, default=Path("experiments/ablations.jsonl"))
    parser.add_argument("--table-only", action="store_true", help="print the table of finished runs and exit")
    args = parser.parse_args()
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    if not args.table_only:
        base = committed_values({key for changes in VARIANTS.values() for key in changes})
        for seed in args.seeds:
            for variant in args.variants:
                if any(r["variant"] == variant and r["seed"] == seed for r in done):
                    continue
                result = run(variant, seed, base)
                done.append(result)
                with args.out.open("a") as handle:
                    handle.write(json.dumps(result) + "\n")
    print(table(done))


if __name__ == "__main__":
    main()
