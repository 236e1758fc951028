"""Reading an MLLM checkpoint's vision tower, and nothing else of it: the families whose towers can serve as the image
encoder, where each keeps its tower's weights, the tower's image preprocessing, and a digest of the weights read.

`model.vision` is a local directory or a Hugging Face id. Only small files are read whole (config.json, the
image-processor config, the shard index); of the weights, only the tower's tensors, from only the shards that hold
them (safetensors, or PyTorch's zip format memory-mapped), so a 7B checkpoint never sits in memory to give up its
300M-6B vision parameters. A Hugging Face id is fetched file by file through huggingface_hub (its cache, its offline
mode), so only those files are downloaded.

Published checkpoints name the tower's tensors in more than one layout: llava-hf's `vision_tower.vision_model.*`,
InternVL's `-hf` `vision_tower.*`, BLIP-2's `vision_model.*`, and transformers >= 4.52's `model.vision_tower.*`.
The family's prefix is cut here; transformers' own key conversion (when the tensors go through `from_pretrained`)
takes care of the layouts inside the tower (CLIP's `vision_model.`), as it does when it loads the whole MLLM.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import PipelineError

CONFIG = "config.json"
SAFETENSORS_INDEX, SAFETENSORS = "model.safetensors.index.json", "model.safetensors"
PYTORCH_INDEX, PYTORCH = "pytorch_model.bin.index.json", "pytorch_model.bin"
PROCESSOR_CONFIGS = ("preprocessor_config.json", "processor_config.json")


@dataclass(frozen=True)
class Family:
    """One MLLM family whose vision tower can be the image encoder.

    `tower_prefixes`: where its checkpoints keep the tower's tensors (tried in order); `layer_key`: the MLLM config's
    key naming the layer whose tokens its language side reads; `default_layer`: that layer when the key is absent."""

    name: str
    model_types: tuple[str, ...]
    tower_prefixes: tuple[str, ...]
    layer_key: str | None
    default_layer: int


FAMILIES = (
    Family("LLaVA", ("llava", "llava_next"), ("model.vision_tower.", "vision_tower."), "vision_feature_layer", -2),
    Family("InternVL", ("internvl",), ("model.vision_tower.", "vision_tower."), "vision_feature_layer", -1),
    # MiniGPT-4's encoder is BLIP-2's EVA ViT-g (MiniGPT-4's own checkpoint is not in a transformers format); the
    # transformers checkpoint already ends at the layer BLIP-2's Q-Former reads (EVA's 40th block dropped).
    Family("BLIP-2 (MiniGPT-4's encoder)", ("blip-2",), ("model.vision_model.", "vision_model."), None, -1),
)
ALLOWED = ("a LLaVA-1.5 or LLaVA-NeXT checkpoint (llava, llava_next), a transformers-native InternVL checkpoint (the "
           "-hf ones: internvl) or a BLIP-2 checkpoint (blip-2, standing for MiniGPT-4's EVA ViT-g)")


def _problem(reference: str, what: str) -> PipelineError:
    return PipelineError(f"model.vision = '{reference}' {what}; allowed: \"\" (the architecture's own image tower), or "
                         f"a local directory or Hugging Face id of {ALLOWED}.")


class CheckpointFiles:
    """The files of a checkpoint: a local directory, or a Hugging Face id fetched file by file (cached by
    huggingface_hub; HF_HUB_OFFLINE=1 reads only the cache)."""

    def __init__(self, reference: str):
        self.reference = reference
        self.local = Path(reference).expanduser()
        if not self.local.is_dir():
            looks_local = reference.startswith((".", "/", "~")) or reference.count("/") != 1
            if looks_local:
                raise _problem(reference, "is not a directory (nor a Hugging Face id, which reads 'owner/name')")
            self.local = None  # type: ignore[assignment]

    def get(self, name: str) -> Path | None:
        """The file `name` of the checkpoint, None if the checkpoint has none."""
        if self.local is not None:
            path = self.local / name
            return path if path.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            HFValidationError,
            LocalEntryNotFoundError,
        )

        try:
            return Path(hf_hub_download(self.reference, name))
        except LocalEntryNotFoundError:  # offline (or unreachable), and not in the cache
            if name != CONFIG:  # the checkpoint is there (its config was found): this file is not
                return None
            raise _problem(self.reference, "is neither a local directory nor a Hugging Face model found online or in "
                                           "the local cache") from None
        except EntryNotFoundError:
            return None
        except (HFValidationError, HfHubHTTPError, OSError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise _problem(self.reference, f"could not be fetched from the Hugging Face hub ({first})") from None

    def directory_of(self, name: str) -> Path:
        """The local directory holding the fetched file `name` (for transformers' from_pretrained of configs)."""
        path = self.get(name)
        if path is None:
            raise _problem(self.reference, f"has no {name}")
        return path.parent


def read_family(files: CheckpointFiles) -> tuple[Family, dict]:
    """The checkpoint's family and its config.json as a dict; one sentence when it has no supported vision tower."""
    path = files.get(CONFIG)
    if path is None:
        raise _problem(files.reference, "has no config.json, so it is not a transformers checkpoint")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _problem(files.reference, f"has a config.json that is not JSON ({error})") from None
    model_type = config.get("model_type", "") if isinstance(config, dict) else ""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family, config
    if model_type == "internvl_chat":
        raise _problem(files.reference, "is an original InternVL checkpoint (internvl_chat, remote code); use its "
                                        "transformers-native '-hf' version (e.g. OpenGVLab/InternVL3-1B-hf)")
    what = "has a vision tower of a family not supported here" if "vision_config" in config else "has no vision tower"
    raise _problem(files.reference, f"is a '{model_type or 'unknown'}' checkpoint that {what}")


def feature_layer(family: Family, config: dict, reference: str) -> int:
    """The layer whose tokens the MLLM's language side reads (negative, counted from the tower's last)."""
    layer = config.get(family.layer_key, family.default_layer) if family.layer_key else family.default_layer
    if not isinstance(layer, int) or layer >= 0:
        raise PipelineError(f"model.vision = '{reference}' reads vision features from layer(s) {layer!r}; set "
                            f"model.vision_layer to one negative layer index (-1 is the last).")
    return layer


LAYER_INDEX = re.compile(r"(?:^|\.)encoder\.layers?\.(\d+)\.")


def tensor_names(files: CheckpointFiles) -> dict[str, Path | str]:
    """Every tensor name of the checkpoint -> the weights file holding it (a shard name until fetched)."""
    for index_name in (SAFETENSORS_INDEX, PYTORCH_INDEX):
        index = files.get(index_name)
        if index is not None:
            return dict(json.loads(index.read_text())["weight_map"])
    single = files.get(SAFETENSORS)
    if single is not None:
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            return {name: single for name in handle.keys()}
    single = files.get(PYTORCH)
    if single is not None:
        return {name: single for name in _torch_weights(single)}
    raise _problem(files.reference, f"has no weights ({SAFETENSORS}, {PYTORCH} or their sharded indexes)")


def _torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """A PyTorch weights file memory-mapped: tensors are read from disk only when touched."""
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def read_tower_tensors(files: CheckpointFiles, family: Family, keep: Callable[[str], bool]
                       ) -> dict[str, torch.Tensor]:
    """The tower's tensors (names relative to the tower) for which `keep(name)` holds, read from only the weight
    files that hold them, in the dtype they are stored in."""
    names = tensor_names(files)
    prefix = next((p for p in family.tower_prefixes if any(n.startswith(p) for n in names)), None)
    if prefix is None:
        raise _problem(files.reference, f"has no tensors under {' or '.join(family.tower_prefixes)}, where "
                                        f"{family.name} checkpoints keep the vision tower")
    wanted: dict[Path | str, list[str]] = {}
    for name, where in names.items():
        if name.startswith(prefix) and keep(name[len(prefix):]):
            wanted.setdefault(where, []).append(name)
    tensors: dict[str, torch.Tensor] = {}
    for where, chosen in wanted.items():
        path = where if isinstance(where, Path) else files.get(str(where))
        if path is None:
            raise _problem(files.reference, f"lists the weights file {where} in its index, but it is missing")
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                tensors.update({name[len(prefix):]: handle.get_tensor(name) for name in chosen})
        else:
            stored = _torch_weights(path)
            tensors.update({name[len(prefix):]: stored[name].clone() for name in chosen})
    return tensors


def layers_below(count: int) -> Callable[[str], bool]:
    """A `keep` for read_tower_tensors: every tensor but those of encoder layers `count` and above."""

    def keep(name: str) -> bool:
        match = LAYER_INDEX.search(name)
        return match is None or int(match.group(1)) < count

    return keep


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes: what ties a trained model to the tower weights it
    was trained on, when the checkpoint keeps only a reference to them. Taken over the built tower's state dict, it
    does not depend on the file layout or the dtype the weights were stored in, only on what the model computes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


INTERPOLATION = {2: "bilinear", 3: "bicubic"}  # PIL's resampling filters that torchvision's Resize also has


def image_preprocessing(files: CheckpointFiles) -> dict:
    """The tower's input preprocessing from the checkpoint's image-processor config, in open_clip's preprocess_cfg
    form: one image at the tower's native size, resized (and centre-cropped where the config says so), never tiled
    (LLaVA-NeXT's AnyRes and InternVL's dynamic tiles are not used)."""
    from transformers import AutoImageProcessor

    found = next((name for name in PROCESSOR_CONFIGS if files.get(name) is not None), None)
    if found is None:
        raise _problem(files.reference, f"has no image-processor config ({' or '.join(PROCESSOR_CONFIGS)})")
    processor = AutoImageProcessor.from_pretrained(str(files.directory_of(found)))
    size, crop = _size_dict(getattr(processor, "size", None)), _size_dict(getattr(processor, "crop_size", None))
    resample = int(getattr(processor, "resample", 3))
    if resample not in INTERPOLATION:
        raise _problem(files.reference, f"resizes images with PIL filter {resample}, which is not supported here "
                                        f"(bilinear or bicubic)")
    config = {"mode": "RGB", "mean": [float(v) for v in processor.image_mean],
              "std": [float(v) for v in processor.image_std], "interpolation": INTERPOLATION[resample],
              "fill_color": 0}
    if getattr(processor, "do_center_crop", False) and crop.get("height") and size.get("shortest_edge"):
        side = (crop["height"], crop["width"])
        config.update(size=side[0] if side[0] == side[1] else list(side), resize_mode="shortest")
        if size["shortest_edge"] != min(side):
            config["resize_shortest"] = size["shortest_edge"]  # resized larger than the crop, then cropped
    elif size.get("height") and size.get("width"):
        side = (size["height"], size["width"])
        config.update(size=side[0] if side[0] == side[1] else list(side), resize_mode="squash")
    elif size.get("shortest_edge"):
        config.update(size=size["shortest_edge"], resize_mode="shortest")
    else:
        raise _problem(files.reference, f"has an image-processor config with no size this pipeline can use ({size})")
    return config


def _size_dict(size: object) -> dict:
    """transformers' size (a dict, or a SizeDict in transformers 5) as a plain dict without unset entries."""
    if size is None:
        return {}
    items = size.items() if isinstance(size, dict) else vars(size).items()
    return {key: value for key, value in items if value is not None}
