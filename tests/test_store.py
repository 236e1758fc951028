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
    assert report["images"] == 2 and report["undecodable_images"] == 2 and report["format"] == "raw"
    assert report["resumed_from"] == 0 and report["decoded_again"] == 0
    store = ImageStore.open(tmp_path / "store")
    assert store.rows(paths).tolist() == [0, -1, -1, 3, 0]
    assert store.format == "raw" and store.shape == (3, 64, 64)
    whole = np.load(tmp_path / "store" / "pixels.npy")  # a standard .npy file, a row per distinct path
    assert whole.dtype == np.uint8 and whole.shape == (4, 3, 64, 64) and np.array_equal(whole[3], store.read([3])[0])
    assert np.array_equal(store.read([3])[0], decode_file(good[1], loader).numpy())
    table, rows, lacking = store.select(pd.DataFrame({"path": paths, "name": list("abcde")}))
    assert table["name"].tolist() == ["a", "d", "e"] and rows.tolist() == [0, 3, 0] and lacking == 2
    served = StoredPixels(store, rows, torch.device("cpu"))
    assert len(served) == 3 and torch.equal(served[np.array([2, 1])][1], store.read([3])[0])


def _interrupted_build(paths, loader, preprocess, out_dir, monkeypatch, fmt="raw") -> None:
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
        build_store(paths, loader, preprocess, out_dir, workers=1, fmt=fmt)
    monkeypatch.setattr(store_module, "decode_files", real)


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_an_interrupted_build_resumes_where_it_stopped(tmp_path, monkeypatch, fmt):
    paths = _images(tmp_path, 7)
    loader, preprocess = _loader()
    _interrupted_build(paths, loader, preprocess, tmp_path / "store", monkeypatch, fmt)
    assert not (tmp_path / "store").exists()  # nothing half-built under the final name
    report = build_store(paths, loader, preprocess, tmp_path / "store", workers=1, fmt=fmt)
    assert report["resumed_from"] == 4 and report["images"] == 7
    build_store(paths, loader, preprocess, tmp_path / "whole", workers=1, fmt=fmt)
    store, whole = ImageStore.open(tmp_path / "store"), ImageStore.open(tmp_path / "whole")
    assert store.format == fmt
    for path in paths:
        assert torch.equal(store.read([store.row_of[path]]), whole.read([whole.row_of[path]])), path
    assert not (tmp_path / ".store.partial").exists()


@pytest.mark.parametrize("fmt", ["raw", "jpeg"])
def test_a_resumed_build_decodes_changed_and_fixed_files_again(tmp_path, monkeypatch, fmt):
    """Kill the build after two chunks, replace a decoded file and fix one that could not be decoded: the resumed
    store holds exactly what a fresh build of the files as they are now holds."""
    paths = _images(tmp_path, 7)
    broken = Path(paths[1])
    good_bytes = broken.read_bytes()
    broken.write_bytes(b"not an image")
    loader, preprocess = _loader()
    _interrupted_build(paths, loader, preprocess, tmp_path / "store", monkeypatch, fmt)
    broken.write_bytes(good_bytes)  # fixed
    Path(paths[0]).write_bytes(Path(paths[5]).read_bytes())  # replaced by another picture
    report = build_store(paths, loader, preprocess, tmp_path / "store", workers=1, fmt=fmt)
    assert report["resumed_from"] == 4 and report["decoded_again"] == 2 and report["undecodable_images"] == 0
    build_store(paths, loader, preprocess, tmp_path / "fresh", workers=1, fmt=fmt)
    store, fresh = ImageStore.open(tmp_path / "store"), ImageStore.open(tmp_path / "fresh")
    for path in paths:
        assert torch.equal(store.read([store.row_of[path]]), fresh.read([fresh.row_of[path]])), path
    assert np.array_equal(store.read([store.row_of[paths[0]]])[0], store.read([store.row_of[paths[5]]])[0])


def test_a_jpeg_store_keeps_the_pixels_close_in_a_fraction_of_the_disk(tmp_path):
    """Re-encoded at the input size, each image reads back within a few levels of its raw pixels, in a fraction
    of the bytes; unreadable files are left out as in a raw store, and batches come back in the rows' order."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):  # photographs are smooth: a blurred gradient with a patch of colour
        base = np.linspace(0, 255, 96)[None, :, None] * np.array([1.0, 0.6, 0.3])[None, None, :] * (i + 4) / 16
        picture = np.clip(base + rng.normal(0, 2, (96, 96, 3)), 0, 255).astype(np.uint8)
        picture[20:50, 30:60] = (200, 40 + 10 * i, 90)
        path = tmp_path / f"photo{i}.png"
        Image.fromarray(picture).save(path)
        paths.append(str(path))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    loader, preprocess = _loader()
    raw = build_store([*paths, str(tmp_path / "broken.jpg")], loader, preprocess, tmp_path / "raw", 1, fmt="raw")
    jpeg = build_store([*paths, str(tmp_path / "broken.jpg")], loader, preprocess, tmp_path / "jpeg", 1, fmt="jpeg")
    assert jpeg["format"] == "jpeg" and jpeg["images"] == raw["images"] == 12 and jpeg["undecodable_images"] == 1
    assert jpeg["bytes"] < raw["bytes"] / 2
    raw_store, jpeg_store = ImageStore.open(tmp_path / "raw"), ImageStore.open(tmp_path / "jpeg")
    rows = np.array([5, 0, 11, 5])
    decoded, exact = jpeg_store.read(rows), raw_store.read(rows)
    assert decoded.shape == exact.shape == (4, 3, 64, 64) and decoded.dtype == torch.uint8
    difference = (decoded.int() - exact.int()).abs().float()
    assert difference.mean() < 3 and torch.equal(decoded[0], decoded[3])
    served = StoredPixels(jpeg_store, np.array([11, 0]), torch.device("cpu"))
    assert torch.equal(served[np.array([1, 0])], jpeg_store.read([0, 11]))


def test_auto_keeps_raw_pixels_below_the_limit_and_encodes_above(monkeypatch):
    assert store_module.store_format("auto", 1000, (3, 224, 224)) == "raw"
    assert store_module.store_format("auto", 1_000_000, (3, 224, 224)) == "jpeg"
    assert store_module.store_format("raw", 1_000_000, (3, 224, 224)) == "raw"


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
