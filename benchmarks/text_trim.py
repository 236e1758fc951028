"""Text-tower FLOPs per text, over the whole context (open_clip's encode_text) against trimmed to each batch's
longest text (RetrievalModel.encode_texts), counted by torch's FlopCounterMode on the CPU.

    python benchmarks/text_trim.py                         # the demo's texts (after `dvc repro triplets`), both archs
    python benchmarks/text_trim.py --archs ViT-B-32 --batch-size 512

Texts: stage 1's captions (data/captions/captions.parquet) and the query texts of stage 2 and evaluation
(data/triplets/*.parquet), or the benchmark workload's texts of the same kinds when those files are missing.
Training draws random batches (`random batches`); embedding and evaluation encode texts shortest first
(pipeline/features/encode.py: `sorted batches`). The FLOPs are the forward pass; training's backward pass scales
the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import count_flops, markdown_table
from pipeline.config import ModelParams
from pipeline.models.clip import create_model, tokenizer_for
from workload import texts_for


def demo_texts(repo: Path) -> dict[str, list[str]]:
    """Stage 1's captions and the query texts, from the demo's outputs when they exist."""
    captions, triplets = repo / "data/captions/captions.parquet", sorted((repo / "data/triplets").glob("*.parquet"))
    if captions.is_file() and triplets:
        table = pd.read_parquet(captions)
        return {"stage 1 captions": table.loc[table["caption"] != "", "caption"].tolist(),
                "query texts": pd.concat([pd.read_parquet(t) for t in triplets])["query_text"].tolist()}
    return {"stage 1 captions": texts_for("stage1", 2000), "query texts": texts_for("stage2", 2000)}


def flops_per_text(model, tokens: torch.Tensor, batch_size: int, order: np.ndarray) -> float:
    total = 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = tokens[torch.from_numpy(order[start:start + batch_size])]
            total += count_flops(lambda: model.encode_texts(batch))
    return total / len(order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["fciq-tiny", "ViT-B-32"])
    parser.add_argument("--batch-size", type=int, default=128, help="the demo's stage 1 and stage 2 batch")
    parser.add_argument("--texts", type=int, default=2048, help="texts per kind (a random sample)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, texts in demo_texts(Path.cwd()).items():
        texts = [texts[i] for i in rng.permutation(len(texts))[:args.texts]]
        for arch in args.archs:
            model = create_model(ModelParams(arch=arch), seed=0).eval()
            tokens = tokenizer_for(arch)(texts)
            counts = model.token_counts(tokens).numpy()
            random_order, sorted_order = rng.permutation(len(texts)), np.argsort(counts, kind="stable")
            model.trim_text = False
            whole = flops_per_text(model, tokens, args.batch_size, random_order)
            model.trim_text = True
            trimmed = [flops_per_text(model, tokens, args.batch_size, order) for order in (random_order, sorted_order)]
            rows.append([name, arch, f"{tokens.shape[1]}", f"{counts.mean():.1f} / {counts.max()}",
                         f"{whole / 1e6:.1f}", f"{trimmed[0] / 1e6:.1f} ({whole / trimmed[0]:.2f}x)",
                         f"{trimmed[1] / 1e6:.1f} ({whole / trimmed[1]:.2f}x)"])
            print(" | ".join(rows[-1]), flush=True)
    print()
    print(markdown_table(["texts", "arch", "context", "tokens mean / max", "MFLOP/text, whole context",
                          f"trimmed, random batches of {args.batch_size}", "trimmed, sorted batches"], rows))


if __name__ == "__main__":
    main()
