"""Stage 1, semantic warm-up: align images with their attribute-aware captions (contrastive, both towers).

Images without a caption (no attribute known) take no part: an empty caption would teach nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config import ModelParams, TrainParams
from pipeline.data.images import decode_images
from pipeline.device import compute_device
from pipeline.errors import PipelineError
from pipeline.losses import clip_loss
from pipeline.models import create_model, image_loader, save_checkpoint, tokenizer_for
from pipeline.train import open_live, train


def stage1(model_params: ModelParams, params: TrainParams, seed: int, captions_path: Path, out_dir: Path,
           live_dir: Path) -> None:
    model = create_model(model_params, seed).to(compute_device())
    captions = pd.read_parquet(captions_path)
    captions = captions[(captions["split"] == "train") & (captions["caption"] != "")].reset_index(drop=True)
    if not params.epochs:
        captions = captions.iloc[:0]  # the base model is the checkpoint: nothing to decode
    elif len(captions) < 2:
        raise PipelineError(f"stage 1 aligns images with their captions, but {captions_path} has no train image with "
                            f"a caption (the catalog backend found no attribute tags); use an MLLM caption.backend "
                            f"or set stage1.epochs: 0 to start stage 2 from the base model.")
    pixels, failed = decode_images(captions["path"].tolist(), image_loader(model))
    captions = captions.drop(index=captions.index[failed]).reset_index(drop=True)
    tokens = tokenizer_for(model.arch)(captions["caption"].tolist())
    caption_id = torch.from_numpy(pd.factorize(captions["caption"])[0]).to(model.device)

    def batch_loss(batch: np.ndarray, rng: np.random.Generator, epoch: int) -> torch.Tensor:
        index = torch.from_numpy(batch)
        ids = caption_id[index.to(model.device)]
        return clip_loss(model.encode_images(pixels[index]), model.encode_texts(tokens[index]), params.temperature,
                         same_text=ids[:, None] == ids[None, :])

    parameters = [p for n, p in model.clip.named_parameters() if not n.startswith("logit_")]
    with open_live(live_dir) as live:
        train([(parameters, params.lr)], batch_loss, len(captions), params, seed, live, [model], desc="stage1")
    save_checkpoint(out_dir, model)
