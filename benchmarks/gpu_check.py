"""The GPU check's parts, their sizes in each mode, and its one Markdown report (run it through gpu_check.sh, which
installs the packages first and puts `python` on the PATH for DVC).

    bash benchmarks/gpu_check.sh [--quick | --dry-run] [--out REPORT.md] [--parts NAME ...]

Parts, in the order they run (the most telling first, so a stopped check loses the least):

    ceiling        benchmarks/common.py: the device line, fp32 and bf16 matmul ceilings
    mine           benchmarks/mine.py: 200,000 x 20,000, k 16: the stage's exact torch search on the GPU, FAISS flat
    train_step     benchmarks/train_step.py: triplet, stage 1, stage 2 steps at batch 512, plain and fast (eager)
    epoch          benchmarks/epoch.py: an end-to-end triplet epoch over 20,000 JPEGs, plain against the store, raw
                   (resident) and re-encoded JPEG (nvJPEG): whether the smaller store starves training
    rank           benchmarks/rank.py: evaluation's chunked exact ranking, 20,000 queries against 50,000 and
                   1,000,000 images (the dense matrix too at 50,000)
    embed          benchmarks/embed.py: gallery embedding of the same 20,000 images
    dag            benchmarks/stage_times.py --breakdown: the demo DAG stage by stage in a copy of the repository
    dag_warm       benchmarks/stage_times.py --warm: the same stages forked from one warm interpreter, as
                   `fashion-cir warm -- dvc repro` runs them (pipeline/warm.py)
    compile        train_step.py --compile: the stage 1 and triplet steps compiled (about a minute of compiling each)
    epoch_compile  epoch.py --compile: the end-to-end triplet epoch compiled (the triplet step's compiled graphs
                   come from the inductor cache the compile part filled)

`--quick` shrinks the sizes (10,000 images, no FAISS run, fewer timed steps, the DAG on a smaller catalogue with
fewer epochs: its fixed costs, not the demo's 60 s target) and leaves out the compiled parts. `--dry-run` runs
everything on the CPU at tiny sizes with the checkout's .venv and one thread per process, the DAG on its stages
before `decode`, nothing compiled: the test suite runs it (tests/test_gpu_check.py). Every part is guarded: a part
that fails or runs out of time is recorded with its output's tail, and the next part runs. A part starts only if
the check's time budget (full 290 s, quick 150 s, from gpu_check.sh's start) leaves it enough; the report says
which parts it skipped and the command that runs them. The report is rewritten after every part.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
START = time.time()
BUDGET = {"full": 290.0, "quick": 150.0, "dry-run": 900.0}
PACKAGES = ["torch", "torchvision", "open_clip_torch", "faiss-cpu", "numpy", "pandas", "dvc", "dvclive", "pydantic",
            "transformers"]
# The dry run's DAG: the stages before `decode` (the first that imports torch) on a catalogue of a few dozen images.
DRY_PARAMS = {"synthetic": {"families_train": 2, "families_val": 2, "family_size": 2, "distractors_val": 2,
                            "image_size": 32},
              "triplets": {"generated_per_category": 4}}
# The quick mode's DAG: every stage, on a third of the demo's catalogue and a quarter of its epochs.
QUICK_PARAMS = {"synthetic": {"families_train": 50, "families_val": 30}, "triplets": {"generated_per_category": 600},
                "stage1": {"epochs": 5}, "stage2": {"epochs": 3}}
DAG_REPOS = {"dag": "repo", "dag_warm": "repo-warm"}  # each DAG part its own copy: a dry run runs two parts at once
TARGETS_NOTE = "the targets of docs/gpu.md: ViT-B/32 at 224 px on one H100 or H200"


@dataclass
class Part:
    name: str
    title: str
    argv: list[str] | None  # None: not run in this mode (`why` says why)
    timeout: float
    minimum: float  # seconds of budget a start needs
    why: str = ""
    status: str = "not run"
    seconds: float = 0.0
    output: str = ""
    notes: list[str] = field(default_factory=list)


def plan(mode: str, work: Path, jsonl: Path) -> list[Part]:
    """The parts with their command lines for `mode`."""
    full, dry = mode == "full", mode == "dry-run"
    def bench(name: str) -> list[str]:  # a dry run's parts run two at a time: each its own files
        return ["--dir", str(work / name), "--workers", "2"] if dry else []

    images = "64" if dry else ("20000" if full else "10000")
    out = ["--jsonl", str(jsonl)]
    step = ["--arch", "fciq-tiny", "--batch-sizes", "8", "--iters", "1", "--warmup", "1"] if dry \
        else ["--batch-sizes", "512", "--iters", "10" if full else "5"]
    epoch = ["--images", images, "--batch-size", "16" if dry else "512", "--step", "triplet", *bench("epoch")]
    mine = ["--gallery", "2000", "--queries", "200", "--dim", "64"] if dry else ["--gallery", "200000", "--queries",
                                                                               "20000"]
    rank = ["--galleries", "2000", "--queries", "200", "--dim", "64", "--dense-up-to", "2000"] if dry else \
        ["--galleries", "50000", "1000000", "--queries", "20000" if full else "5000", "--dense-up-to", "50000"]
    compiled = "a compiled part takes about a minute of compiling per step; " + \
        ("full mode only" if mode == "quick" else "not on a CPU dry run")
    return [
        Part("ceiling", "Matmul ceiling", ["benchmarks/common.py", *out], 60, 10),
        Part("mine", "Mining (mine.py)",
             ["benchmarks/mine.py", *mine, "--kinds", *(["flat"] if full or dry else []), *out], 120, 20),
        Part("train_step", "Training step, inputs on the device (train_step.py)",
             ["benchmarks/train_step.py", *step, *out], 150, 30),
        Part("epoch", "End-to-end epoch from JPEG files (epoch.py)", ["benchmarks/epoch.py", *epoch, *out], 200, 40),
        Part("rank", "Evaluation's chunked ranking (rank.py)", ["benchmarks/rank.py", *rank, *out], 90, 15),
        Part("embed", "Gallery embedding (embed.py)",
             ["benchmarks/embed.py", "--images", images, "--batch-size", "32" if dry else "1024", *bench("embed"),
              *out],
             120, 15),
        Part("dag", "The demo DAG stage by stage (stage_times.py --breakdown)",
             ["benchmarks/stage_times.py", "--breakdown", "--repo", str(work / DAG_REPOS["dag"]),
              *(["--stages", *dry_stages()] if dry else []), *out], 240, 50),
        Part("dag_warm", "The demo DAG stage by stage, warm (stage_times.py --warm)",
             ["benchmarks/stage_times.py", "--warm", "--repo", str(work / DAG_REPOS["dag_warm"]),
              *(["--stages", *dry_stages()] if dry else []), *out], 180, 40),
        Part("compile", "Compiled training steps (train_step.py --compile)",
             ["benchmarks/train_step.py", "--steps", "stage1", "triplet", *step, "--compile", "--compiled-only",
              *out] if full else None, 240, 80, why=compiled),
        Part("epoch_compile", "End-to-end epoch, compiled (epoch.py --compile)",
             ["benchmarks/epoch.py", *epoch, "--compile", "--no-plain", *out] if full else None, 150, 40,
             why=compiled),
    ]


def dry_stages() -> list[str]:
    """The dry run's stages: those of dvc.yaml before `decode`, in order (the cheap ones, without torch)."""
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    return stages[:stages.index("decode")] if "decode" in stages else stages[:3]


def elapsed() -> float:
    """Seconds since gpu_check.sh started (the wheel installation included)."""
    return time.time() - float(os.environ.get("GPU_CHECK_STARTED", START))


def run(part: Part, budget: float) -> None:
    """Run `part` with a timeout, echoing its output as progress; record status, time and output."""
    left = budget - elapsed()
    if left < part.minimum:
        part.status = f"skipped: {left:.0f} s of the {budget:.0f} s budget left, it needs about {part.minimum:.0f} s"
        return
    timeout = min(part.timeout, left)
    print(f"== {part.name}: {' '.join(part.argv)} (at most {timeout:.0f} s)", file=sys.stderr, flush=True)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *part.argv], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []

    def echo() -> None:
        assert process.stdout is not None
        for raw in process.stdout:  # bytes, split at \n only: a progress bar's \r redraws stay on one line
            line = raw.decode(errors="replace").rstrip("\n").split("\r")[-1].rstrip()
            lines.append(line)
            print(f"   {part.name}| {line}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        process.wait(timeout=timeout)
        part.status = "ok" if process.returncode == 0 else f"failed (exit status {process.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        part.status = f"timed out after {timeout:.0f} s"
    reader.join(timeout=5)
    part.seconds = time.perf_counter() - started
    part.output = "\n".join(lines)


def copy_repository(target: Path, params: dict) -> None:
    """The working tree (tracked and untracked files, not ignored ones) in `target`, as a git repository with
    `params` merged into params.yaml, for the DAG part; DVC's update check off (no network)."""
    if (REPO / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout.split("\0")
        files = [REPO / name for name in listed if name and (REPO / name).is_file()]
    else:
        skip = {".git", ".whl", ".venv", ".venv-vllm", "__pycache__", ".pytest_cache", ".ruff_cache", "cache", "tmp"}
        files = [p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.relative_to(REPO).parts)]
    for source in files:
        destination = target / source.relative_to(REPO)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    settings = yaml.safe_load((target / "params.yaml").read_text())
    for section, values in params.items():
        settings.setdefault(section, {}).update(values)
    (target / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (target / ".dvc" / "config.local").write_text("[core]\n    check_update = false\n")
    identity = {"GIT_AUTHOR_NAME": "gpu-check", "GIT_AUTHOR_EMAIL": "gpu-check@localhost",
                "GIT_COMMITTER_NAME": "gpu-check", "GIT_COMMITTER_EMAIL": "gpu-check@localhost"}
    if shutil.which("git"):
        for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "gpu check"]):
            subprocess.run(command, cwd=target, check=True, capture_output=True, env={**os.environ, **identity})
    else:  # DVC without git; DVCLive then logs without a baseline revision
        (target / ".dvc" / "config.local").write_text("[core]\n    check_update = false\n    no_scm = true\n")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return ", ".join(found)


def records(jsonl: Path) -> list[dict]:
    if not jsonl.is_file():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def targets(results: list[dict], dag: Part, dag_warm: Part, mode: str) -> list[list[str]]:
    """docs/gpu.md's targets against what this check measured (a dash where not measured at their size)."""
    def verdict(ok: bool | None) -> str:
        return "-" if ok is None or mode == "dry-run" else ("yes" if ok else "**no**")

    rows = []
    epochs = [r for r in results if r["benchmark"] == "epoch" and r["step"] == "triplet"]
    fast = [r for r in epochs if r["path"].startswith("pipeline")]
    plain = max((r for r in epochs if r["path"].startswith("plain")), key=lambda r: r["per_s"], default=None)
    if fast:
        top = max(fast, key=lambda r: r["per_s"])
        versus = top["per_s"] / plain["per_s"] if plain else None
        rows.append(["end-to-end triplet training from the store: >= 5,000 triplets/s and >= 3x plain",
                     f"{top['per_s']:,.0f} triplets/s ({top['path']}), " +
                     (f"{versus:.2f}x plain ({plain['per_s']:,.0f})" if versus else "no plain run"),
                     verdict(top["per_s"] >= 5000 and versus is not None and versus >= 3)])
    raw = [r for r in fast if "raw store" in r["path"]]
    jpeg = [r for r in fast if "jpeg store" in r["path"]]
    if raw and jpeg:
        share = jpeg[-1]["per_s"] / raw[-1]["per_s"]
        rows.append(["training from the jpeg store (a tenth of the disk): >= 90% of the raw store's triplets/s",
                     f"{jpeg[-1]['per_s']:,.0f} against {raw[-1]['per_s']:,.0f} triplets/s ({share:.0%})",
                     verdict(share >= 0.9)])
    stage1 = [r for r in results if r["benchmark"] == "train_step" and r["step"] == "stage1"
              and r["loop"].startswith("fast")]
    if stage1:
        top = max(stage1, key=lambda r: r["per_s"])
        rows.append(["stage 1 step: >= 6,000 pairs/s", f"{top['per_s']:,.0f} pairs/s ({top['loop']}, batch "
                     f"{top['batch']})", verdict(top["per_s"] >= 6000)])
    mined = [r for r in results if r["benchmark"] == "mine" and r["method"].startswith("exact torch")]
    if mined:
        r = mined[-1]
        size = r["gallery"] == 200_000 and r["queries"] == 20_000
        rows.append(["mining 200,000 x 20,000 (k 16): <= 1 s", f"{r['seconds']:.2f} s ({r['method']}, "
                     f"{r['gallery']:,} x {r['queries']:,}, recall {r['recall']:.4f})",
                     verdict(r["seconds"] <= 1.0 if size else None)])
    cold = [r for r in results if r["benchmark"] == "stage_times" and not r.get("warm")]
    if cold:
        total = sum(r["wall"] for r in cold)
        whole = dag.status == "ok" and mode == "full"
        rows.append(["the demo DAG: <= 60 s, at most 5 s per stage beyond its compute (each stage in its own "
                     "interpreter)", f"{total:.0f} s over {len(cold)} stages; fixed cost up to "
                     f"{max(r['fixed'] for r in cold):.1f} s a stage", verdict(total <= 60 if whole else None)])
    warm = [r for r in results if r["benchmark"] == "stage_times" and r.get("warm")]
    if warm:
        started = sum(r["wall"] for r in results if r["benchmark"] == "warm_server")
        total = started + sum(r["wall"] for r in warm)
        compute = {r["stage"]: r["compute"] for r in cold}
        fixed = [r["wall"] - compute[r["stage"]] for r in warm if r["stage"] in compute]
        whole = dag_warm.status == "ok" and mode == "full"
        rows.append(["the demo DAG: <= 60 s, at most 5 s per stage beyond its compute (warm: `fashion-cir warm`)",
                     f"{total:.0f} s over {len(warm)} stages, the server's start ({started:.1f} s) included"
                     + (f"; beyond the compute measured cold, up to {max(fixed):.1f} s a stage" if fixed else ""),
                     verdict(total <= 60 and (not fixed or max(fixed) <= 5) if whole else None)])
    ranked = [r for r in results if r["benchmark"] == "rank" and r["how"] == "chunked"]
    if ranked:
        top = max(ranked, key=lambda r: r["gallery"])
        rows.append(["evaluation against 1,000,000 images: >= 5,000 queries/s, exact",
                     f"{top['per_s']:,.0f} queries/s against {top['gallery']:,} images, peak "
                     f"{top['peak'] / 2**30:.2f} GiB", verdict(top["per_s"] >= 5000 if top["gallery"] >= 10**6
                                                               else None)])
    embedded = [r for r in results if r["benchmark"] == "embed" and r["path"].startswith("pipeline")]
    if embedded:
        top = max(embedded, key=lambda r: r["per_s"])
        rows.append(["gallery embedding from the store: >= 20,000 images/s", f"{top['per_s']:,.0f} images/s "
                     f"({top['path']})", verdict(top["per_s"] >= 20000)])
    return rows


def tables(output: str) -> str:
    """The Markdown tables a benchmark printed (blocks of lines starting with '|'), and its first lines (the
    device and the set-up)."""
    lines = output.splitlines()
    head = [line for line in lines[:3] if line.strip() and not line.startswith("|")]
    blocks, current = [], []
    for line in lines:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    table = "\n".join(blocks[-1]) if blocks else ""
    return "\n".join(f"    {line}" for line in head) + ("\n\n" + table if table else "")


def report(parts: list[Part], mode: str, jsonl: Path, work: Path, command: str, final: bool) -> str:
    """The whole report as it stands."""
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    dag = next(p for p in parts if p.name == "dag")
    dag_warm = next(p for p in parts if p.name == "dag_warm")
    lines = [f"# GPU check ({mode})", "",
             f"{date}; `{command}`; {elapsed():.0f} s since the check started"
             + ("" if final else " (still running)") + f"; {os.cpu_count()} CPU cores; {versions()}.", ""]
    ceiling = next(p for p in parts if p.name == "ceiling")
    if ceiling.status == "ok" and ceiling.output:
        lines += [f"Device: {ceiling.output.splitlines()[0]}.", ""]
    if mode == "dry-run":
        lines += ["A dry run: the CPU, tiny sizes, the DAG's stages before `decode` on a tiny catalogue. It checks "
                  "that the check works; its numbers say nothing about a GPU.", ""]
    installed, kept = work / "installed.json", work / "kept.txt"
    if installed.is_file() or kept.is_file():
        report = json.loads(installed.read_text()) if installed.is_file() else {}  # pip's installation report
        done = [f"{item['metadata']['name']} {item['metadata']['version']}" for item in report.get("install", [])]
        there = kept.read_text().splitlines() if kept.is_file() else []
        lines += [f"Installed from .whl/: {', '.join(done) or report.get('error', 'nothing')}. Already on the "
                  f"machine (kept): {', '.join(there) or 'nothing'}."
                  + (" An import failed after that, so every wheel was installed." if (work / "installed-all.json")
                     .is_file() else ""), ""]
    failed_import = work / "import-error.txt"
    if failed_import.is_file() and failed_import.read_text().strip():
        lines += ["The import check after installing the missing wheels failed with:", "", "```text",
                  *failed_import.read_text().strip().splitlines()[-5:], "```", ""]
    lines += ["## Targets", "", f"({TARGETS_NOTE}; a dash: not measured at the target's size in this run)", ""]
    rows = targets(records(jsonl), dag, dag_warm, mode)
    lines += ["| target | measured | met |", "|---|---|---|", *[f"| {' | '.join(r)} |" for r in rows]] if rows \
        else ["No target measured yet."]
    skipped = [p.name for p in parts if p.argv is not None and p.status.startswith(("skipped", "timed out"))]
    if final and skipped:
        lines += ["", f"Skipped or stopped for time: {', '.join(skipped)}. `bash benchmarks/gpu_check.sh --parts "
                  f"{' '.join(skipped)} --out REPORT.md` runs them alone."]
    for part in parts:
        lines += ["", f"## {part.title}", ""]
        if part.argv is None:
            lines.append(f"Not run: {part.why}.")
            continue
        lines.append(f"`python {' '.join(part.argv)}`: {part.status}"
                     + (f" in {part.seconds:.0f} s" if part.status == "ok" else "") + ".")
        lines += [f"{note}" for note in part.notes]
        if part.status == "ok":
            lines += ["", tables(part.output)]
        elif part.output:
            tail = "\n".join(part.output.splitlines()[-40:])
            lines += ["", "```text", tail, "```"]
    return "\n".join(lines) + "\n"


def execute(part: Part, mode: str, work: Path, jsonl: Path) -> None:
    """Run one part; the DAG part first gets its copy of the repository, and afterwards the run's metrics."""
    if part.name in DAG_REPOS:
        try:
            params = {"dry-run": DRY_PARAMS, "quick": QUICK_PARAMS, "full": {}}[mode]
            if mode == "quick":
                part.notes.append(f"Shrunk to fit the quick budget: {json.dumps(QUICK_PARAMS)} over the demo's "
                                  f"params; the fixed costs are the demo's, the compute is less.")
            if mode != "dry-run" and cuda_available():
                params = {**params, "compute": {"precision": "bf16"}}
                part.notes.append("`compute.precision: bf16`, as in the GPU reference run.")
            copy_repository(work / DAG_REPOS[part.name], params)
        except (OSError, subprocess.CalledProcessError, yaml.YAMLError) as error:
            part.status, part.output = "failed before it started: copying the repository", repr(error)
            return
    run(part, BUDGET[mode])
    if part.name in DAG_REPOS:
        metrics = work / DAG_REPOS[part.name] / "metrics" / "eval.json"
        evaluated = any(r["benchmark"] == "stage_times" and r["stage"] == "evaluate" for r in records(jsonl))
        if part.status == "ok" and evaluated and metrics.is_file():
            average = json.loads(metrics.read_text()).get("average", {})
            part.notes.append(f"Metrics of this run: {', '.join(f'{k} {v:.2f}' for k, v in average.items())}.")


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=list(BUDGET), default="full")
    parser.add_argument("--out", type=Path, default=REPO / "gpu_report.md")
    parser.add_argument("--work", type=Path, required=True, help="a scratch folder (gpu_check.sh makes one)")
    parser.add_argument("--parts", nargs="+", help="run only these parts (names in this module's docstring)")
    args = parser.parse_args()
    jsonl = args.work / "results.jsonl"
    parts = plan(args.mode, args.work, jsonl)
    if args.parts:
        unknown = set(args.parts) - {p.name for p in parts}
        if unknown:
            raise SystemExit(f"unknown parts {sorted(unknown)}; parts: {[p.name for p in parts]}")
        for part in parts:
            if part.name not in args.parts and part.argv is not None:
                part.argv, part.why = None, "not asked for (--parts)"
    command = "bash benchmarks/gpu_check.sh" + {"full": "", "quick": " --quick", "dry-run": " --dry-run"}[args.mode] \
        + (f" --parts {' '.join(args.parts)}" if args.parts else "")
    if args.mode == "dry-run":  # two cores shared with whatever else runs: one thread per process, no spinning
        os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out, report(parts, args.mode, jsonl, args.work, command, final=False))
    # A GPU check runs one part at a time (each measures the machine alone); a dry run measures nothing, so two at a
    # time fit its 2-core test machine's minute.
    with ThreadPoolExecutor(2 if args.mode == "dry-run" else 1) as pool:
        running = [pool.submit(execute, part, args.mode, args.work, jsonl) for part in parts if part.argv is not None]
        for _ in as_completed(running):
            write(args.out, report(parts, args.mode, jsonl, args.work, command, final=False))
        for done in running:
            done.result()
    write(args.out, report(parts, args.mode, jsonl, args.work, command, final=True))
    print(f"gpu_check: report in {args.out} ({elapsed():.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
