import json
import shutil

import pytest

from pipeline.data import PAIR_COLUMNS
from pipeline.data.fashioniq import FashionIQ
from pipeline.errors import PipelineError
from tests.conftest import REALDATA


def test_reads_the_demo_catalogue(tiny_catalogue):
    dataset = FashionIQ(tiny_catalogue, ["dress", "toptee"])
    images = dataset.images("val")
    assert set(images["category"]) == {"dress", "toptee"}
    pairs = dataset.pairs("train")
    assert list(pairs.columns) == PAIR_COLUMNS
    assert pairs["pair_id"].is_unique
    assert len(pairs) == 2 * 4 * 2
    assert dataset.tags("train")


def test_missing_images_drop_their_pairs_and_are_counted(tiny_catalogue, tmp_path):
    root = tmp_path / "fiq"
    shutil.copytree(tiny_catalogue, root)
    pair = json.loads((root / "captions" / "cap.dress.train.json").read_text())[0]
    (root / "images" / f"{pair['target']}.png").unlink()
    dataset = FashionIQ(root, ["dress"])
    pairs = dataset.pairs("train")
    assert pair["target"] not in set(pairs["target"])
    assert dataset.missing["dress.train.pairs_dropped"] >= 1
    dataset.images("train")
    assert dataset.missing["dress.train.images_missing"] == 1


def test_missing_root_is_one_sentence(tmp_path):
    with pytest.raises(PipelineError, match=r"data.root = '.*nowhere' does not exist; expected"):
        FashionIQ(tmp_path / "nowhere", ["dress"])


def test_missing_split_names_the_file(tiny_catalogue, tmp_path):
    root = tmp_path / "fiq"
    shutil.copytree(tiny_catalogue, root)
    (root / "captions" / "cap.shirt.val.json").unlink()
    with pytest.raises(PipelineError, match=r"cap.shirt.val.json is missing"):
        FashionIQ(root, ["shirt"]).pairs("val")


@pytest.mark.skipif(not (REALDATA / "fashioniq").is_dir(), reason="real FashionIQ annotations not present "
                    "(../shared/realdata is only on the development machines)")
def test_real_fashioniq_val_annotations_parse_with_published_counts(tmp_path):
    root = tmp_path / "fashioniq"
    shutil.copytree(REALDATA / "fashioniq", root)
    (root / "images").mkdir()
    expected = {"dress": 2017, "shirt": 2038, "toptee": 1961}
    names = set()
    for category in expected:
        for entry in json.loads((root / "captions" / f"cap.{category}.val.json").read_text()):
            names.update((entry["candidate"], entry["target"]))
    for category in expected:
        names.update(json.loads((root / "image_splits" / f"split.{category}.val.json").read_text()))
    for name in names:  # stand-in files: the reader only needs them to exist
        (root / "images" / f"{name}.jpg").write_bytes(b"")
    dataset = FashionIQ(root, list(expected))
    pairs = dataset.pairs("val")
    assert pairs.groupby("category").size().to_dict() == expected
    images = dataset.images("val")
    assert images.groupby("category").size().to_dict() == {"dress": 3817, "shirt": 6346, "toptee": 5373}
    assert images.duplicated(["category", "name"]).sum() == 0
    assert images["name"].duplicated().sum() > 0  # some images are listed under two categories
    assert ((pairs["caption1"] != "") | (pairs["caption2"] != "")).all()  # a few real first captions are empty
