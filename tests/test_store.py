from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN
from PIL import Image

from pipeline.config import ModelParams
from pipeline.data import store as store_module
from pipeline.data.store import ImageStore, StoredPixels, build_store, decode_file
from pipeline.errors import PipelineError
from pipeline.models.clip import create_model, input_preprocessing
from pipeline.models.preprocessing import image_loader, preprocessing

TINY = ModelParams(arch="fciq-tiny", pretrained="")


def _images(directory, n):
    paths = []
    for i in range(n):
        path = directory / f"img{i}.png"
        Image.new("RGB", (40 + i, 64), (20 * i, 255 - 20 * i, 7 * i)).save(path)
        paths.append(str(path))
    return paths


def _loader():
    preprocess = input_preprocessing(TINY)
    return image_loader(preprocess), preprocess


def test_store_holds_each_file_once_and_skips_what_cannot_be_decoded(tmp_path):
    good = _images(tmp_path, 2)
    broken = tmp_path / "broken.png"
    broken.write_bytes(open(good[0], "rb").read()[:30])
    paths = [good[0], str(broken), str(tmp_path / "missing.png"), good[1], good[0]]
    loader, preprocess = _loader()
    report = build_store(paths, loader, preprocess, tmp_path / "store", workers=1)
    assert report == {"images": 2, "undecodable_images": 2, "resumed_from": 0, "decoded_again": 0}
    store = ImageStore.open(tmp_path / "store")
    assert store.rows(paths).tolist() == [0, -1, -1, 3, 0]
    assert store.pixels.dtype == np.uint8 and store.pixels.shape[1:] == (3, 64, 64)
    assert np.array_equal(store.pixels[3], decode_file(good[1], loader).numpy())
    table, rows, lacking = store.select(pd.DataFrame({"path": paths, "name": list("abcde")}))
    assert table["name"].tolist() == ["a", "d", "e"] and rows.tolist() == [0, 3, 0] and lacking == 2
    served = StoredPixels(store, rows, torch.device("cpu"))
    assert len(served) == 3 and torch.equal(served[np.array([2, 1])][1], torch.from_numpy(np.array(store.pixels[3])))


def _interrupted_build(paths, loader, preprocess, out_dir, monkeypatch) -> None:
    """A build stopped (Ctrl-C) after two chunks of two images."""
    monkeypatch.setattr(store_module, "BATCH", 2)
    monkeypatch.setattr(store_module, "CHUNK", 2)
    real = store_module.decode_files

    def interrupted(*args, **kwargs):
        for count, batch in enumerate(real(*args, **kwargs)):
            if count == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(store_module, "decode_files", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_store(paths, loader, preprocess, out_dir, workers=1)
    monkeypatch.setattr(store_module, "decode_files", real)


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path, monkeypatch):
    paths = _images(tmp_path, 7)
    loader, preprocess = _loader()
    _interrupted_build(paths, loader, preprocess, tmp_path / "store", monkeypatch)
    assert not (tmp_path / "store").exists()  # nothing half-built under the final name
    report = build_store(paths, loader, preprocess, tmp_path / "store", workers=1)
    assert report["resumed_from"] == 4 and report["images"] == 7
    store = ImageStore.open(tmp_path / "store")
    for path in paths:
        assert np.array_equal(store.pixels[store.row_of[path]], decode_file(path, loader).numpy()), path
    assert not (tmp_path / ".store.partial").exists()


def test_a_resumed_build_decodes_changed_and_fixed_files_again(tmp_path, monkeypatch):
    """Kill the build after two chunks, replace a decoded file and fix one that could not be decoded: the resumed
    store holds exactly what a fresh build of the files as they are now holds."""
    paths = _images(tmp_path, 7)
    broken = Path(paths[1])
    good_bytes = broken.read_bytes()
    broken.write_bytes(b"not an image")
    loader, preprocess = _loader()
    _interrupted_build(paths, loader, preprocess, tmp_path / "store", monkeypatch)
    broken.write_bytes(good_bytes)  # fixed
    Path(paths[0]).write_bytes(Path(paths[5]).read_bytes())  # replaced by another picture
    report = build_store(paths, loader, preprocess, tmp_path / "store", workers=1)
    assert report["resumed_from"] == 4 and report["decoded_again"] == 2 and report["undecodable_images"] == 0
    store = ImageStore.open(tmp_path / "store")
    for path in paths:
        assert np.array_equal(store.pixels[store.row_of[path]], decode_file(path, loader).numpy()), path


def test_a_store_decoded_for_other_preprocessing_is_refused(tmp_path):
    paths = _images(tmp_path, 2)
    loader, preprocess = _loader()
    build_store(paths, loader, preprocess, tmp_path / "store", workers=1)
    store = ImageStore.open(tmp_path / "store")
    store.check(preprocessing(create_model(TINY, seed=0)), "the model")  # the stage-1 model's own: accepted
    padded = preprocessing(create_model(TINY.model_copy(update={"preprocess": "targetpad"}), seed=0))
    with pytest.raises(PipelineError, match="dvc repro"):
        store.check(padded, "the model")
    with pytest.raises(PipelineError, match="decode"):
        ImageStore.open(tmp_path / "nothing")


def test_input_preprocessing_follows_the_pretrained_tag_without_loading_weights():
    """ViT-B-32 with the `openai` tag normalises with OpenAI's statistics; nothing is downloaded to know that."""
    preprocess = input_preprocessing(ModelParams(arch="ViT-B-32", pretrained="openai", preprocess="targetpad"))
    assert tuple(preprocess["mean"]) == OPENAI_DATASET_MEAN and preprocess["size"] in (224, [224, 224])
    assert preprocess["target_ratio"] == 1.25
    assert input_preprocessing(TINY) == preprocessing(create_model(TINY, seed=0))
