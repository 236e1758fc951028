"""The gallery's features: new images encoded `index.batch_size` at a time, the rest read back by content."""

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.config import ModelParams
from pipeline.data import digests as digests_module
from pipeline.models.clip import create_model
from pipeline.runtime import Runtime
from pipeline.search.feature_cache import FeatureCache
from pipeline.search.gallery import gallery_features


def _gallery(directory, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = directory / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return pd.DataFrame({"name": [f"p{i}" for i in range(n)], "path": paths})


def test_new_images_are_encoded_in_batches_and_unchanged_files_are_not_read_again(tmp_path, monkeypatch):
    gallery = _gallery(tmp_path, 10)
    (tmp_path / "9.png").write_bytes(b"not an image")
    model = create_model(ModelParams(), seed=0)
    batches: list[int] = []
    encode = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda pixels: batches.append(len(pixels)) or encode(pixels))
    cache = FeatureCache(tmp_path / "cache.sqlite")
    kept, features, counts = gallery_features(model, gallery, cache, "sig", Runtime(), workers=1, batch_size=4)
    assert batches == [4, 4, 1]  # the undecodable tenth file leaves the last batch one image
    assert counts == {"encoded": 9, "features_cached": 0, "undecodable_images": 1}
    assert kept["name"].tolist() == [f"p{i}" for i in range(9)] and features.shape == (9, model.embed_dim)

    read: list[str] = []
    monkeypatch.setattr(digests_module, "_read_digest", lambda path: read.append(path) or "")
    batches.clear()
    _, again, counts = gallery_features(model, gallery, cache, "sig", Runtime(), workers=1, batch_size=4)
    assert batches == [] and read == []  # the undecodable file is tried again, but no file is hashed again
    assert counts == {"encoded": 0, "features_cached": 9, "undecodable_images": 1}
    np.testing.assert_array_equal(again, features)
