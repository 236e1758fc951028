import json
import shutil

import pytest

from pipeline.config import DataParams
from pipeline.data import IMAGE_COLUMNS, PAIR_COLUMNS, open_dataset
from pipeline.data.cirr import CIRR
from pipeline.errors import PipelineError
from tests.conftest import REALDATA
from tests.support.benchmark_layouts import cirr_download


@pytest.fixture(scope="module")
def tiny_cirr(tiny_catalogue, tmp_path_factory) -> object:
    return cirr_download(tiny_catalogue, tmp_path_factory.mktemp("cirr_dataset"))


def test_reads_clip4cirs_layout_with_images_beside_the_annotations(tiny_cirr):
    dataset = open_dataset(DataParams(source="cirr", root=str(tiny_cirr)))
    assert dataset.splits == ("train", "val", "test1")
    images = dataset.images("val")
    assert list(images.columns) == IMAGE_COLUMNS and len(images) > 0
    assert set(images["category"]) == {"cirr"}
    assert all(p.startswith(str(tiny_cirr.parent / "dev")) for p in images["path"])
    pairs = dataset.pairs("val")
    assert list(pairs.columns) == PAIR_COLUMNS
    assert (pairs["caption2"] == "").all() and pairs["pair_id"].is_unique
    assert all(len(members) == 6 and c in members and t in members
               for members, c, t in zip(pairs["subset"], pairs["reference"], pairs["target"]))
    assert dataset.missing == {"val.images_missing": 0, "val.pairs_dropped": 0}


def test_test1_pairs_have_hidden_targets(tiny_cirr):
    pairs = CIRR(tiny_cirr).pairs("test1")
    assert len(pairs) > 0 and (pairs["target"] == "").all()


def test_missing_images_drop_their_pairs_and_are_counted(tiny_cirr, tmp_path):
    root = tmp_path / "cirr_dataset"
    shutil.copytree(tiny_cirr.parent, root)
    entry = json.loads((root / "cirr" / "captions" / "cap.rc2.val.json").read_text())[0]
    (root / "dev" / f"{entry['target_hard']}.png").unlink()
    dataset = CIRR(root / "cirr")
    pairs = dataset.pairs("val")
    assert str(entry["pairid"]) not in set(pairs["pair_id"])
    assert dataset.missing["val.images_missing"] == 1 and dataset.missing["val.pairs_dropped"] >= 1


def test_wrong_root_and_missing_split_are_one_sentence(tiny_cirr, tmp_path):
    with pytest.raises(PipelineError, match=r"has no 'captions/' folder; expected CIRR's layout"):
        CIRR(tiny_cirr.parent)
    root = tmp_path / "cirr"
    shutil.copytree(tiny_cirr, root)
    (root / "captions" / "cap.rc2.test1.json").unlink()
    with pytest.raises(PipelineError, match=r"cap.rc2.test1.json is missing; the pipeline reads CIRR's test1 split"):
        CIRR(root).pairs("test1")


@pytest.mark.skipif(not (REALDATA / "cirr").is_dir(), reason="real CIRR annotations not present "
                    "(../shared/realdata is only on the development machines)")
def test_real_cirr_annotations_parse_with_published_counts(tmp_path):
    root = tmp_path / "cirr_dataset"
    shutil.copytree(REALDATA / "cirr", root / "cirr")
    for split in ("val", "test1"):  # stand-in files at the listed paths: the reader only needs them to exist
        listed = json.loads((root / "cirr" / "image_splits" / f"split.rc2.{split}.json").read_text())
        for relative in listed.values():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(b"")
    dataset = CIRR(root / "cirr")
    val, test = dataset.pairs("val"), dataset.pairs("test1")
    assert (len(val), len(test)) == (4181, 4148)
    assert (len(dataset.images("val")), len(dataset.images("test1"))) == (2297, 2315)
    assert val["target"].ne("").all() and test["target"].eq("").all()
    assert val["subset"].map(len).eq(6).all() and test["subset"].map(len).eq(6).all()
    assert (val["caption1"] != "").all()
    assert dataset.missing == {"val.images_missing": 0, "val.pairs_dropped": 0, "test1.images_missing": 0,
                               "test1.pairs_dropped": 0}
