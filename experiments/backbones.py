"""The paper's backbone comparison in one command: each image encoder (the open_clip architecture's own tower, and
LLaVA's, InternVL's and MiniGPT-4's vision towers) through stage 1, stage 2 and evaluation, then one table.

    python experiments/backbones.py            # the backbone-* presets on top of params.yaml (e.g. paper-fashioniq)
    python experiments/backbones.py --demo     # the demo catalogue, tiny random towers of each family from scratch
    python experiments/backbones.py --table-only [--demo]

Each backbone is one `dvc exp run -S ...` in this workspace with every key of its preset
(pipeline/presets/backbone-*.yaml), so a run never inherits the previous one's settings; only the stages those keys
reach run again (decode, stage 1 and what follows; captions and triplets are shared). The table takes recall from
metrics/eval.json and train time and peak memory from the training stages' reports (reports/stage1.json,
reports/stage2.json), which are not metrics: they differ between any two runs. Results are appended to a JSONL file
(resumable: finished backbones are skipped). DVC tracks `model.vision`'s value, not the checkpoint's files: after a
checkpoint changed in place, `--force`.

`--demo` builds, with transformers, a random-weight checkpoint of each family at the size of the demo's own image
tower (64 px, patch 16, 4 layers of width 128) under datasets/backbones/, in the key layout published checkpoints
use, and trains every tower from scratch at stage1.lr, as the demo trains its own: the table shows the mechanism
at work on 2 CPU cores, not which MLLM's tower is best (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BACKBONES = {"clip": None, "llava": "llava", "internvl": "internvl", "minigpt4": "blip2"}  # name -> tiny family
DEMO_TOWER = {"image_size": 64, "patch_size": 16, "hidden": 128, "layers": 4, "heads": 4}  # fciq-tiny's tower


def preset_settings(name: str) -> dict[str, object]:
    """pipeline/presets/backbone-<name>.yaml as dotted keys."""
    preset = yaml.safe_load((REPO / "pipeline" / "presets" / f"backbone-{name}.yaml").read_text())
    return {f"{section}.{key}": value for section, values in preset.items() for key, value in values.items()}


def demo_settings(name: str, family: str | None, stage1_lr: float) -> dict[str, object]:
    """The demo's overrides: a tiny tower of the family, built once, trained from scratch like the demo's own."""
    if family is None:
        return {}
    sys.path.insert(0, str(REPO))  # the test doubles' builder: real transformers checkpoints, random weights
    from tests.support.tiny_mllms import build_tiny_mllm

    directory = Path("datasets/backbones") / name
    if not (directory / "config.json").is_file():
        layers = DEMO_TOWER["layers"] + (1 if family == "llava" else 0)  # LLaVA reads the second-to-last layer
        build_tiny_mllm(family, REPO / directory, DEMO_TOWER["image_size"], DEMO_TOWER["patch_size"],
                        DEMO_TOWER["hidden"], layers, DEMO_TOWER["heads"])
    return {"model.vision": str(directory), "stage1.vision_lr": stage1_lr, "stage1.projection_lr": stage1_lr}


def _value(value: object) -> str:
    """A value as `dvc exp run -S` reads it back (YAML): floats with a mantissa dot, as YAML 1.1 wants them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, ".6e")
    return '""' if value == "" else str(value)


def run(name: str, settings: dict[str, object], force: bool) -> dict:
    command = ["dvc", "exp", "run", *(["--force"] if force else [])]
    for key, value in settings.items():
        command += ["-S", f"{key}={_value(value)}"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO, stdout=sys.stdout, stderr=subprocess.STDOUT)
    read = lambda path: json.loads((REPO / path).read_text())  # noqa: E731
    return {"backbone": name, "command": " ".join(command), "metrics": read("metrics/eval.json"),
            "stage1": read("reports/stage1.json"), "stage2": read("reports/stage2.json")}


def table(rows: list[dict]) -> str:
    """One row per backbone: recall per category and on average (FashionIQ-style metrics), or the CIRR headline
    numbers, then the train time of both stages and the larger of their peak memories."""
    if not rows:
        return "(no finished runs)"
    metrics = rows[0]["metrics"]
    groups = [g for g, v in metrics.items() if isinstance(v, dict) and "R@10" in v and g != "average"]
    columns = [(g, k) for g in groups for k in ("R@10", "R@50")] + [("average", k) for k in ("R@10", "R@50", "mean")]
    if "average" not in metrics:  # CIRR: one gallery, its own headline
        columns = [(None, k) for k in ("R@1", "R@5", "R@10", "R@50", "mean") if k in metrics]
    header = ["backbone", "image encoder"] + [f"{g} {k}" if g else k for g, k in columns] + \
        ["train time (s)", "peak memory (GiB)", "device"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["backbone"], row["stage1"]["image_encoder"]]
        cells += [f"{(row['metrics'][g] if g else row['metrics'])[k]:.2f}" for g, k in columns]
        cells += [f"{row['stage1']['seconds'] + row['stage2']['seconds']:.0f}",
                  f"{max(row['stage1']['peak_memory_gib'], row['stage2']['peak_memory_gib']):.2f}",
                  row["stage1"]["device"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--demo", action="store_true", help="tiny random towers of each family, from scratch")
    parser.add_argument("--out", type=Path, help="results, appended (default experiments/backbones[-demo].jsonl)")
    parser.add_argument("--table-only", action="store_true", help="print the table of finished runs and exit")
    parser.add_argument("--force", action="store_true",
                        help="run every stage again: DVC tracks model.vision's value, not the files behind it, so a "
                             "checkpoint changed in place (or a new revision of a Hugging Face id) needs this")
    args = parser.parse_args()
    out = args.out or REPO / "experiments" / f"backbones{'-demo' if args.demo else ''}.jsonl"
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if not args.table_only:
        stage1_lr = yaml.safe_load((REPO / "params.yaml").read_text())["stage1"]["lr"]
        for name in args.backbones:
            if any(r["backbone"] == name for r in done):
                continue
            settings = preset_settings(name)
            if args.demo:
                settings.update(demo_settings(name, BACKBONES[name], stage1_lr))
            result = run(name, settings, args.force)
            done.append(result)
            with out.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
    print(table([r for name in args.backbones for r in done if r["backbone"] == name]))


if __name__ == "__main__":
    main()
