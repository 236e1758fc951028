"""The `decode` stage: every image of every split decoded once, as the model expects it, into the image store
(pipeline/data/store.py) that stage 1, `embed` and `evaluate` read instead of the image files."""

from __future__ import annotations

from pipeline.config import Params
from pipeline.data import open_dataset
from pipeline.data.store import build_store
from pipeline.models.clip import input_preprocessing
from pipeline.models.preprocessing import image_loader
from pipeline.paths import Paths


def run(params: Params, paths: Paths) -> dict[str, int | str]:
    files = open_dataset(params.data).image_files()
    preprocess = input_preprocessing(params.model)
    return build_store(files, image_loader(preprocess), preprocess, paths.image_store, params.compute.workers,
                       params.store.format, params.store.quality)
