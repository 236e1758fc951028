"""Captions/s and tokens/s of the `vllm` captioning backend against a server, at several concurrency levels.

    # against a running server (a GPU box: `vllm serve llava-hf/llava-1.5-7b-hf`)
    python benchmarks/caption_throughput.py --url http://127.0.0.1:8000 --model llava-hf/llava-1.5-7b-hf \\
        --images data/fashioniq/images --n 512 --concurrency 1 8 32 64

    # or let it start one, as the caption stage does (here: the CPU build and a tiny model, for the plumbing)
    python benchmarks/caption_throughput.py --model /tmp/tiny-llava --serve-command \\
        ".venv-vllm/bin/python -m vllm.entrypoints.openai.api_server" --serve-args "--max-model-len 1024" \\
        --images data/synthetic/images --n 32 --concurrency 1 4

It goes through exactly the stage's code path (padded-square JPEGs, the schema prompt, structured output,
retries) but bypasses the cache, so every image is a request. One JSON line per concurrency level is printed and,
with --out, appended to a file.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from pipeline.captioning.base import Caption, ImageToCaption
from pipeline.captioning.vllm_client import VLLMServerCaptioner
from pipeline.captioning.vllm_server import launch
from pipeline.config import CaptionParams

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def measure(params: CaptionParams, items: list[ImageToCaption], concurrency: int) -> dict:
    captioner = VLLMServerCaptioner(params.model_copy(update={"max_concurrency": concurrency}))
    with captioner:
        captioner.caption(items[:concurrency])  # warm-up: connection, image preprocessing caches, CUDA graphs
        warm = captioner.usage()
        started = time.perf_counter()
        results = captioner.caption(items)
        seconds = time.perf_counter() - started
        usage = {key: value - warm.get(key, 0) for key, value in captioner.usage().items()}
        versions = captioner.versions()
    ok = sum(isinstance(r, Caption) for r in results)
    return {"model": params.model, "concurrency": concurrency, "images": len(items), "captioned": ok,
            "seconds": round(seconds, 2), "captions_per_s": round(ok / seconds, 2),
            "requests_per_s": round(usage["requests"] / seconds, 2),
            "output_tokens_per_s": round(usage["completion_tokens"] / seconds, 1),
            "prompt_tokens_per_s": round(usage["prompt_tokens"] / seconds, 1),
            "mean_output_tokens": round(usage["completion_tokens"] / max(usage["requests"], 1), 1),
            "image_size": params.image_size, "max_tokens": params.max_tokens, "versions": versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", type=Path, required=True, help="a folder of images")
    parser.add_argument("--url", default="", help="a running server; empty: start one with --serve-command")
    parser.add_argument("--serve-command", default="vllm serve")
    parser.add_argument("--serve-args", default="", help="extra server flags, one string")
    parser.add_argument("--n", type=int, default=256, help="images per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, help="append the JSON lines here")
    args = parser.parse_args()

    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:args.n]
    if not paths:
        sys.exit(f"error: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.images}.")
    items = [ImageToCaption(p.stem, "dress", p) for p in paths]
    params = CaptionParams(backend="vllm", model=args.model, url=args.url, image_size=args.image_size,
                           max_tokens=args.max_tokens, serve_command=args.serve_command,
                           serve_args=shlex.split(args.serve_args))

    def run_all(url: str) -> None:
        for concurrency in args.concurrency:
            row = measure(params.model_copy(update={"url": url}), items, concurrency)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(row) + "\n")

    if args.url:
        run_all(args.url)
    else:
        with launch(params, params.model) as server:
            run_all(server.url)


if __name__ == "__main__":
    main()
