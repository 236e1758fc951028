import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from pipeline.config import ModelParams
from pipeline.errors import PipelineError
from pipeline.models.clip import create_clip, create_model, load_checkpoint, save_checkpoint, tokenizer_for
from pipeline.models.preprocessing import image_loader, preprocessing
from pipeline.models.retrieval import RetrievalModel

TINY = ModelParams(arch="fciq-tiny", pretrained="")


def test_same_seed_same_random_init():
    a, b = create_model(TINY, seed=5), create_model(TINY, seed=5)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    c = create_model(TINY, seed=6)
    assert not torch.equal(a.clip.visual.conv1.weight, c.clip.visual.conv1.weight)


@pytest.mark.parametrize("composition", ["sum", "combiner"])
def test_checkpoint_round_trip_with_weights_only(tmp_path, composition):
    model = create_model(TINY, seed=0)
    model.set_composition(composition)
    model.eval()
    save_checkpoint(tmp_path / "ckpt", model)
    loaded = load_checkpoint(tmp_path / "ckpt").eval()
    assert loaded.composition == composition and loaded.arch == "fciq-tiny"
    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    tokens = tokenizer_for("fciq-tiny")(["a red dress", "is blue"])
    with torch.no_grad():
        a = model.compose(model.encode_images(pixels), model.encode_texts(tokens))
        b = loaded.compose(loaded.encode_images(pixels), loaded.encode_texts(tokens))
    assert torch.allclose(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(2))


def test_local_checkpoint_loads_through_the_pretrained_path(tmp_path):
    """A user's checkpoint file goes through open_clip's own loader, exactly as model.pretrained=<path> does."""
    source = create_clip(TINY, seed=1)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    loaded = create_clip(TINY.model_copy(update={"pretrained": str(path)}), seed=99)
    assert torch.equal(loaded.visual.conv1.weight, source.visual.conv1.weight)


def test_bad_model_params_are_one_sentence(tmp_path):
    with pytest.raises(PipelineError, match="model.arch = 'ViT-Z-99'"):
        create_clip(TINY.model_copy(update={"arch": "ViT-Z-99"}), 0)
    with pytest.raises(PipelineError, match="no such file"):
        create_clip(TINY.model_copy(update={"pretrained": str(tmp_path / "missing.pt")}), 0)
    with pytest.raises(PipelineError, match="is missing"):
        load_checkpoint(tmp_path / "nothing")


def test_loader_matches_open_clip_preprocessing():
    from PIL import Image

    model = create_model(TINY, seed=0)
    _, _, preprocess = open_clip.create_model_and_transforms("fciq-tiny")
    image = Image.new("RGB", (80, 50), (200, 30, 60))
    ours = (image_loader(preprocessing(model))(image).float() / 255 - model.mean[0]) / model.std[0]
    assert torch.allclose(ours, preprocess(image), atol=2e-2)


def test_checkpoint_keeps_activation_and_preprocessing_of_the_pretrained_weights(tmp_path):
    """OpenAI weights need QuickGELU and some tags bring their own mean/std; rebuilding must not lose either."""
    clip = open_clip.create_model("fciq-tiny", force_quick_gelu=True)
    cfg = {**clip.visual.preprocess_cfg, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    open_clip.set_model_preprocess_cfg(clip, cfg)
    model = RetrievalModel(clip, "fciq-tiny").eval()
    save_checkpoint(tmp_path / "ckpt", model)
    loaded = load_checkpoint(tmp_path / "ckpt").eval()
    assert any(isinstance(m, QuickGELU) for m in loaded.clip.modules())
    assert loaded.clip.visual.preprocess_cfg["mean"] == (0.5, 0.5, 0.5)
    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(model.encode_images(pixels), loaded.encode_images(pixels))


@pytest.mark.parametrize("size, padded", [((100, 50), (100, 80)), ((50, 100), (80, 100)), ((100, 90), (100, 90)),
                                          ((64, 64), (64, 64)), ((125, 100), (125, 100))])
def test_targetpad_pads_elongated_images_to_the_target_ratio_only(size, padded):
    # CLIP4Cir: ratio >= 1.25 is padded to 1.25 (not to a square), evenly and in black; 125x100 is exactly 1.25,
    # so its computed padding is zero.
    from PIL import Image

    from pipeline.models.preprocessing import TargetPad

    image = Image.new("RGB", size, (255, 255, 255))
    out = TargetPad(1.25)(image)
    assert out.size == padded
    if padded != size:
        assert out.getpixel((0, 0)) == (0, 0, 0)
        assert out.getpixel((out.size[0] // 2, out.size[1] // 2)) == (255, 255, 255)


def test_targetpad_is_kept_by_the_checkpoint_and_used_by_the_loader(tmp_path):
    from PIL import Image

    model = create_model(TINY.model_copy(update={"preprocess": "targetpad", "target_ratio": 1.25}), seed=0)
    assert model.target_ratio == 1.25
    save_checkpoint(tmp_path / "ckpt", model)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.target_ratio == 1.25
    tall = Image.new("RGB", (40, 120), (255, 255, 255))  # a long dress photo: padded, not cropped
    padded = image_loader(preprocessing(loaded))(tall)
    cropped = image_loader(preprocessing(create_model(TINY, seed=0)))(tall)
    size = loaded.clip.visual.preprocess_cfg["size"]
    expected = (3, *size) if isinstance(size, tuple) else (3, size, size)
    assert tuple(padded.shape) == tuple(cropped.shape) == expected
    assert padded.float().mean() < cropped.float().mean()  # black bars on the sides; the crop is all white


def test_openai_tags_get_the_activation_they_were_trained_with():
    from pipeline.models.clip import tag_needs_quick_gelu

    assert tag_needs_quick_gelu("ViT-B-32", "openai")
    assert not tag_needs_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")
    assert not tag_needs_quick_gelu("ViT-B-32", "/weights/my-clip.pt") and not tag_needs_quick_gelu("ViT-B-32", None)
