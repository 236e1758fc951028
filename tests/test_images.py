import numpy as np
import torch
from PIL import Image

from pipeline.data.images import decode_images


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.resize((4, 4)))).permute(2, 0, 1)


def test_corrupt_and_missing_files_are_skipped_and_reported(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (10, 6), (255, 0, 0)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:30])
    pixels, failed = decode_images([str(good), str(broken), str(tmp_path / "missing.png"), str(good)], _to_tensor)
    assert failed == [1, 2]
    assert pixels.shape == (2, 3, 4, 4) and pixels.dtype == torch.uint8
    assert pixels[0, 0].eq(255).all()
