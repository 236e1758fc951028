"""`fashion-cir`: use what the pipeline trained.

    fashion-cir search --image REF --text "is red with long sleeves" [--k 10] [--json]   # composed
    fashion-cir search --text "a red floral dress"                   # text only
    fashion-cir search --image REF                                   # image only: more like this
    fashion-cir search ... --where "colour = red" --where "price <= 40" [--every-category]
    fashion-cir search --queries queries.csv [--k 10] [--json]     # columns image, text (CSV, or JSON lines)
    fashion-cir serve [--host 127.0.0.1] [--port 8000] [--max-batch 64] [--no-metrics] [--follow-seconds 1]
                                                                     # the web page and JSON API
    fashion-cir plots [REVISION ...]                                 # every plot, offline: plots/report/
    fashion-cir warm -- dvc repro                                    # stages share one warm interpreter

REF is a gallery image (its name, its products.csv file name, or its file's path) or another image file; a query
with a gallery reference searches its category unless --every-category (or a --where on the category). `serve`
beyond 127.0.0.1 needs an API key in FASHION_CIR_API_KEY. Run from the repository (or pass --root): the model is
models/stage2 and the index is index/, both made by `dvc repro`. Bad input ends with one sentence on stderr and exit
status 1; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError, run_stage
from pipeline.paths import Paths


def read_queries(path: Path) -> list[tuple[str, str]]:
    """(image, text) pairs from a CSV with columns image and text, or JSON lines with those keys."""
    if not path.is_file():
        raise PipelineError(f"--queries {path} does not exist.")
    try:
        table = (pd.read_json(path, lines=True, dtype=str) if path.suffix in (".jsonl", ".json")
                 else pd.read_csv(path, dtype=str, keep_default_na=False))
    except Exception as error:  # pandas raises many types for a malformed file
        raise PipelineError(f"--queries {path} could not be read: {str(error).splitlines()[0]}.") from None
    if "image" not in table.columns and "text" not in table.columns:
        raise PipelineError(f"--queries {path} has neither an 'image' nor a 'text' column; it needs one or both.")
    images = table["image"].fillna("").astype(str) if "image" in table.columns else [""] * len(table)
    texts = table["text"].fillna("").astype(str) if "text" in table.columns else [""] * len(table)
    return list(zip(images, texts, strict=True))


def search(args: argparse.Namespace) -> None:
    from pipeline.search.engine import SearchEngine

    one = args.image is not None or args.text is not None
    if (args.queries is None) == (not one):
        raise PipelineError("give --image and/or --text (one query), or --queries FILE (a batch).")
    queries = read_queries(args.queries) if args.queries else [(args.image or "", args.text or "")]
    engine = SearchEngine.open(Paths(args.root), args.checkpoint)
    answers = []
    for number, (image, text) in enumerate(queries, start=1):
        try:
            answers.append(engine.search(image or None, text, args.k, args.where, args.every_category))
        except PipelineError as error:
            raise PipelineError(f"{args.queries} query {number}: {error}" if args.queries else str(error)) from None
    if args.json:
        print(json.dumps([asdict(answer) for answer in answers], indent=2))
        return
    for answer in answers:
        query = " + ".join(part for part in (answer.reference, f"\"{answer.text}\"" if answer.text else "") if part)
        within = f"  where {' and '.join(answer.filters)}" if answer.filters else ""
        print(f"{answer.kind}: {query}{within}  ({answer.milliseconds:.0f} ms)")
        for hit in answer.hits:
            print(f"{hit.rank:4d}  {hit.name:<24} {hit.score:7.4f}  {hit.path}")


def serve(args: argparse.Namespace) -> None:
    from pipeline.search.server import serve as run_server

    if args.max_batch < 1:
        raise PipelineError(f"--max-batch {args.max_batch} is not allowed: use 1 (one query at a time) or more.")
    if args.follow_seconds < 0:
        raise PipelineError(f"--follow-seconds {args.follow_seconds} is not allowed: use 0 (never follow the index) "
                            f"or more.")
    run_server(Paths(args.root), host=args.host, port=args.port, checkpoint=args.checkpoint, max_batch=args.max_batch,
               metrics=not args.no_metrics, follow_seconds=args.follow_seconds)


def plots(args: argparse.Namespace) -> None:
    from pipeline.evaluation.plots import render_plots

    written = render_plots(args.root, Paths(args.root).plots_report, args.revisions)
    print(f"{len(written)} files in {Paths(args.root).plots_report}: open index.html in any browser (no network "
          f"needed)")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="fashion-cir", description=__doc__.split("\n\n")[0])
    commands = main.add_subparsers(dest="command", required=True)
    for name, help_text in (("search", "answer composed queries from the gallery index"),
                            ("serve", "the web page: query the gallery, browse validation queries"),
                            ("plots", "every plot in dvc.yaml as one offline HTML page and PNGs")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--root", type=Path, default=Path("."), help="the repository (default: here)")
        if name != "plots":
            command.add_argument("--checkpoint", type=Path, default=None,
                                 help="a stage-2 checkpoint directory (default: <root>/models/stage2)")
    find = commands.choices["search"]
    find.add_argument("--image", help="the reference: a gallery image's name, or an image file")
    find.add_argument("--text", help="the modification text (with --image), or the whole query (without)")
    find.add_argument("--queries", type=Path, help="a batch: CSV (or JSON lines) with columns image and/or text")
    find.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    find.add_argument("--where", action="append", default=[], metavar="FILTER",
                      help="only gallery images where FILTER holds: 'colour = red', 'gender in (women, girls)', "
                           "'price <= 40' (repeat: all must hold); the columns are the category and a catalogue's")
    find.add_argument("--every-category", action="store_true",
                      help="search every category (a query with a gallery reference searches its category)")
    find.add_argument("--json", action="store_true", help="print JSON instead of a table")
    web = commands.choices["serve"]
    web.add_argument("--host", default="127.0.0.1",
                     help="the address to listen on (default: this machine only; any other needs FASHION_CIR_API_KEY)")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--max-batch", type=int, default=64,
                     help="concurrent queries answered together, at most (default 64; 1: one at a time)")
    web.add_argument("--no-metrics", action="store_true", help="serve no Prometheus metrics at /metrics")
    web.add_argument("--follow-seconds", type=float, default=1.0,
                     help="check index/ for a new version this often and swap it in (default 1; 0: never)")
    commands.choices["plots"].add_argument(
        "revisions", nargs="*", help="compare these git revisions or experiments (dvc plots diff); none: the workspace")
    commands.add_parser(
        "warm", help="run a command (dvc repro, dvc exp run ...) whose stages skip importing torch and open_clip",
        description="Run COMMAND with one warm interpreter that has imported torch, open_clip, FAISS and pandas; "
                    "each stage it runs is forked from it instead of starting and importing them itself "
                    "(pipeline/warm.py). Outputs are the same bytes as without it.",
    ).add_argument("argv", metavar="command", nargs=argparse.REMAINDER, help="the command, after --")
    return main


def warm(args: argparse.Namespace) -> None:
    from pipeline.warm import run_warm

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    sys.exit(run_warm(command))


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    run_stage(lambda: {"search": search, "serve": serve, "plots": plots, "warm": warm}[args.command](args))


if __name__ == "__main__":
    main(sys.argv[1:])
