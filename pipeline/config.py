"""Typed, validated params, and the per-stage view that lets a stage read only what dvc.yaml declares for it.

`params.yaml` is validated whole when any stage starts: an unknown key, a wrong type or an impossible value stops
the stage with one sentence naming the key and what is allowed. A stage then gets a `StageParams` that exposes
only the sections its dvc.yaml entry lists, so code cannot silently depend on a param DVC does not track (which
would make `dvc exp run -S ...` skip a stage that should re-run).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from ruamel.yaml import YAML

from pipeline.errors import PipelineError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class SyntheticParams(_Section):
    """Size and look of the procedurally rendered demo catalogue."""

    families_train: PositiveInt = 150
    families_val: PositiveInt = 100
    family_size: Annotated[int, Field(ge=2, le=8)] = 4
    distractors_val: NonNegativeInt = 300
    image_size: Annotated[int, Field(ge=16, le=512)] = 64


FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")


class CatalogParams(_Section):
    """Which columns of your catalogue's products table are which (`data.source: catalog`; pipeline/data/catalog.py).
    Title and split columns are optional: without a split column, `val_fraction` of the images go to val by `seed`."""

    image_column: str = "image"
    category_column: str = "category"
    title_column: str = "title"
    split_column: str = "split"
    attribute_columns: list[str] = Field(default_factory=list)  # [] = every column not named above
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2


class DataParams(_Section):
    """Which dataset to read, where, and which of its categories: FashionIQ's layout (some of its three categories),
    CIRR's, or your own catalogue (free category names; [] = all of them)."""

    source: Literal["fashioniq", "cirr", "catalog"] = "fashioniq"
    root: str = "data/synthetic"
    categories: list[str] = Field(default_factory=lambda: list(FASHIONIQ_CATEGORIES))
    catalog: CatalogParams = CatalogParams()

    @field_validator("categories")
    @classmethod
    def _known(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("categories must not repeat")
        source = info.data.get("source")
        unknown = [c for c in value if c not in FASHIONIQ_CATEGORIES]
        if source == "fashioniq" and unknown:
            raise ValueError(f"FashionIQ's categories are {', '.join(FASHIONIQ_CATEGORIES)}, not {unknown[0]!r}")
        if source == "fashioniq" and not value:
            raise ValueError(f"list at least one of FashionIQ's categories ({', '.join(FASHIONIQ_CATEGORIES)})")
        return value


class CaptionParams(_Section):
    """Which captioner writes the attribute-aware captions, and how.

    Keys in UNTRACKED say where and how fast the work runs, not what it computes (the server URL, the command that
    starts the server, concurrency, batch size): dvc.yaml does not list them, so changing them never invalidates
    captions. Everything else (backend, model, decoding settings) is tracked, and is also part of the cache key.
    """

    UNTRACKED: ClassVar[frozenset[str]] = frozenset(
        {"batch_size", "max_concurrency", "url", "serve_command", "serve_args", "startup_timeout"})

    backend: Literal["catalog", "vllm", "vllm-offline", "transformers"] = "catalog"
    model: str = "llava-hf/llava-1.5-7b-hf"
    max_tokens: PositiveInt = 256
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    image_size: Annotated[int, Field(ge=16, le=2048)] = 336
    free_text: bool = False
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: PositiveInt = 64
    max_concurrency: PositiveInt = 32
    url: str | list[str] = ""  # one server, or a list of them: requests balanced across them
    serve_command: str = "vllm serve"
    serve_args: list[str] = Field(default_factory=list)
    startup_timeout: PositiveFloat = 900.0


class TripletsParams(_Section):
    """Generated triplets: `generated_per_category` for training; where the dataset has no annotated val pairs (a
    catalogue without a triplets table), `generated_val_per_category` held-out val queries made the same way."""

    generated_per_category: NonNegativeInt = 2000
    generated_val_per_category: NonNegativeInt = 300
    max_changed_fields: Annotated[int, Field(ge=1, le=3)] = 2
    reference_prompt: bool = True
    phrasing: Literal["template", "mllm"] = "template"  # mllm: generated modification texts worded by an LLM
    phrasing_model: str = ""  # the LLM for phrasing on the vLLM server; "" = caption.model


class ModelParams(_Section):
    """The base model: an open_clip architecture, its weights, and how images are fitted to its input size.

    `preprocess: targetpad` is CLIP4Cir's: an image more elongated than `target_ratio` is padded (black) to that
    ratio before the architecture's own resize and centre crop, so long dresses are not cut off.

    `vision` names an MLLM checkpoint (a Hugging Face id or a local directory: LLaVA, InternVL, BLIP-2) whose vision
    tower replaces the architecture's own image tower; a projection maps its pooled tokens into the text tower's space
    (pipeline/models/vision_tower.py). `vision_layer` is the layer whose tokens are pooled (null: the layer the MLLM
    itself reads), `vision_pooling` how (`mean` of the patch tokens, or the class token `cls`)."""

    arch: str = "fciq-tiny"
    pretrained: str = ""
    preprocess: Literal["clip", "targetpad"] = "clip"
    target_ratio: Annotated[float, Field(ge=1.0)] = 1.25
    vision: str = ""
    vision_layer: Annotated[int, Field(le=-1)] | None = None
    vision_pooling: Literal["mean", "cls"] = "mean"


class StoreParams(_Section):
    """How the `decode` stage keeps the images it fitted to the model's input size (pipeline/data/store.py): `raw`
    uint8 pixels (nothing to decode when read), `jpeg` re-encoded at `quality` (about a tenth of the disk, decoded
    again when read), or `auto`: raw while that takes under 4 GiB, jpeg above."""

    format: Literal["auto", "raw", "jpeg"] = "auto"
    quality: Annotated[int, Field(ge=50, le=100)] = 90


class EmbedParams(_Section):
    batch_size: PositiveInt = 256


class NegativesParams(_Section):
    """How hard negatives are mined: around the zero-shot composed query (`anchor: query`, the images the base
    model would retrieve instead) or around the target (`anchor: target`, the images most like the answer)."""

    k: NonNegativeInt = 16
    index: Literal["flat", "hnsw", "ivf"] = "flat"
    max_target_similarity: Annotated[float, Field(gt=0, le=1)] = 1.0
    anchor: Literal["query", "target"] = "target"
    false_negatives: Literal["target", "same_caption"] = "same_caption"  # what is never a negative (false_negatives.py)


class GalleryParams(_Section):
    """The folder search answers from (the `index` stage). By default the training data itself (the same folder as
    `data.root`); otherwise a folder in the catalogue layout (images/ + products.csv, its columns named as
    `data.catalog` says) that a shop keeps current: changing it re-runs only the `index` stage, which captions,
    decodes and encodes only the images it has not seen before (pipeline/search/gallery.py)."""

    root: str = "data/synthetic"


MILVUS_COLLECTION = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"


class IndexParams(_Section):
    """The gallery's vector index (the `index` stage; `fashion-cir search` and `serve` read it). `backend` faiss
    keeps it in a file under index/; milvus keeps it in a Milvus collection at `uri` (a local Milvus Lite file, or a
    server's URL whose credentials come from the MILVUS_TOKEN environment variable, never from this file). 0 means
    "chosen from the gallery's size": nlist about sqrt(images), nprobe nlist / 4, pq_m one sub-quantizer per 8
    dimensions."""

    backend: Literal["faiss", "milvus"] = "faiss"
    uri: str = ""                    # milvus: a local .db file or http(s)://host:port; "" = data/gallery/milvus.db
    collection: Annotated[str, Field(pattern=MILVUS_COLLECTION)] = "fashion_cir_gallery"  # milvus: its name
    kind: Literal["flat", "ivf", "hnsw", "ivfpq"] = "flat"
    nlist: NonNegativeInt = 0        # ivf, ivfpq: inverted lists
    nprobe: NonNegativeInt = 0       # ivf, ivfpq: lists searched per query
    hnsw_m: Annotated[int, Field(ge=4, le=256)] = 32  # hnsw: neighbours per node
    ef_search: PositiveInt = 128     # hnsw: candidates kept while searching
    ef_construction: PositiveInt = 100  # hnsw: candidates kept while building (40: faster, lower recall)
    pq_m: NonNegativeInt = 0         # ivfpq: sub-quantizers (bytes per vector); must divide the dimension
    refine: NonNegativeInt = 4       # ivfpq: re-rank refine x k candidates with the exact vectors (0: off)
    batch_size: PositiveInt = 256    # images per batch when embedding the gallery

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        if re.match(r"^[a-z][a-z0-9+.-]*://[^/@]*@", value):
            raise ValueError("credentials do not belong in params.yaml (DVC records it in dvc.lock and git); put "
                             "them in the MILVUS_TOKEN environment variable ('user:password' or an API key)")
        return value


class TrainParams(_Section):
    epochs: NonNegativeInt = 20
    batch_size: Annotated[int, Field(ge=2)] = 128
    lr: PositiveFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.1
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    temperature: PositiveFloat = 0.05


class Stage1Params(TrainParams):
    """Stage 1's loop. With an MLLM vision tower (`model.vision`) the image side has two parts with their own
    learning rates: the pretrained tower (`vision_lr`; 0 keeps it frozen, as LLaVA and MiniGPT-4 keep theirs) and the
    new projection into the text space (`projection_lr`, trained from scratch). `lr` is the text tower's, and the
    architecture's own image tower's when there is no MLLM tower."""

    vision_lr: Annotated[float, Field(ge=0)] = 0.0
    projection_lr: PositiveFloat = 1e-3


class Stage2Params(TrainParams):
    """Stage 2's loop; `lr` is the combiner's, `text_lr` the text tower's (null: the same), since a pretrained
    tower wants a far smaller step than a combiner trained from scratch."""

    composition: Literal["sum", "combiner"] = "combiner"
    text_lr: PositiveFloat | None = None
    hard_negatives_from_epoch: NonNegativeInt = 0  # coarse negatives only before it (a coarse-to-hard curriculum)
    remine_every: NonNegativeInt = 0  # re-mine the hard negatives with the model in training every N epochs; 0 = never
    epochs: NonNegativeInt = 12
    temperature: PositiveFloat = 0.1
    static_negatives: NonNegativeInt = 128


class ComputeParams(_Section):
    """How the training, embedding and evaluation stages use the hardware.

    `precision: bf16` (autocast; the weights and optimizer stay fp32) changes results beyond floating-point noise,
    so it is tracked. The UNTRACKED keys change speed only: torch.compile of the encoders, the number of torchrun
    processes for stage 1 and stage 2 (DDP, one per GPU; the global batch and the loss are the same), and the
    decode workers (0 = one per core)."""

    UNTRACKED: ClassVar[frozenset[str]] = frozenset({"compile", "processes", "workers"})

    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False  # true: torch.compile both encoders (a fixed cost that long GPU runs repay)
    processes: PositiveInt = 1
    workers: NonNegativeInt = 0


class EvalParams(_Section):
    batch_size: PositiveInt = 256
    query: Literal["composed", "text", "image"] = "composed"
    recall_ks: list[PositiveInt] = Field(default_factory=lambda: [1, 5, 10, 20, 50, 100], min_length=1)


class Params(_Section):
    seed: int = 0
    synthetic: SyntheticParams = SyntheticParams()
    data: DataParams = DataParams()
    caption: CaptionParams = CaptionParams()
    triplets: TripletsParams = TripletsParams()
    model: ModelParams = ModelParams()
    store: StoreParams = StoreParams()
    embed: EmbedParams = EmbedParams()
    negatives: NegativesParams = NegativesParams()
    stage1: Stage1Params = Stage1Params()
    stage2: Stage2Params = Stage2Params()
    eval: EvalParams = EvalParams()
    gallery: GalleryParams = GalleryParams()
    index: IndexParams = IndexParams()
    compute: ComputeParams = ComputeParams()


def read_yaml(path: Path) -> Any:
    try:
        return YAML(typ="safe", pure=True).load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; run from the repository root, where params.yaml and dvc.yaml live.")
    except Exception as exc:  # ruamel raises many types; all mean "not valid YAML"
        raise PipelineError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}.") from exc


def _sentence(path: Path, raw: dict[str, Any], error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        section = first["loc"][:-1]
        model: type[BaseModel] = Params
        for part in section:
            model = model.model_fields[str(part)].annotation  # type: ignore[assignment]
        allowed = ", ".join(model.model_fields)
        where = f"under '{'.'.join(map(str, section))}'" if section else "at the top level"
        return f"{path}: unknown key '{key}'; the keys allowed {where} are: {allowed}."
    message = first["msg"].removeprefix("Value error, ")
    return f"{path}: {key} = {first.get('input')!r} is not allowed: {message[0].lower()}{message[1:]}."


def validate_params(raw: Any, path: Path) -> Params:
    """`raw` (read from `path`) as Params; keys it leaves out take their defaults."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections (seed, data, model, ...).")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise PipelineError(_sentence(path, raw, error)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file."""
    path = Path(path)
    return validate_params(read_yaml(path) or {}, path)


def _undeclared(stage: str, key: str) -> PipelineError:
    return PipelineError(f"stage '{stage}' reads params '{key}' but dvc.yaml does not declare it; add it to the "
                         f"stage's params so DVC re-runs the stage when it changes.")


def _restricted(section: BaseModel, readable: set[str], stage: str, prefix: str) -> Any:
    """A copy of `section`, of its own class (a subclass of it), whose fields outside `readable` refuse to be read
    with the sentence a stage needs: so code typed against CaptionParams gets a CaptionParams, and a stage cannot
    silently depend on a key DVC does not track for it."""
    cls = type(section)
    fields = set(cls.model_fields)

    def __getattribute__(self: BaseModel, name: str) -> Any:
        if name in fields and name not in readable:
            raise _undeclared(stage, f"{prefix}{name}")
        return object.__getattribute__(self, name)

    guarded = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__, "__module__": cls.__module__,
                                           "__qualname__": cls.__qualname__})
    return guarded.model_construct(**{name: getattr(section, name) for name in fields})


def restrict(params: Params, stage: str, declared: set[str]) -> Params:
    """`params` as `stage` may read them: whole sections and single keys its dvc.yaml entry lists, plus the
    UNTRACKED keys of any section (speed only, readable by every stage)."""
    readable: dict[str, Any] = {}
    for name in Params.model_fields:
        value = getattr(params, name)
        if not isinstance(value, _Section):
            if name in declared:
                readable[name] = value
            continue
        keys = {d.split(".", 1)[1] for d in declared if d.startswith(f"{name}.")}
        keys |= set(getattr(value, "UNTRACKED", ()))
        if name in declared:
            readable[name] = value
        elif keys:
            readable[name] = _restricted(value, keys, stage, f"{name}.")
    return _restricted(params.model_construct(**{**dict(params), **readable}), set(readable), stage, "")


def stage_params(stage: str, params_path: str | Path = "params.yaml", dvc_path: str | Path = "dvc.yaml") -> Params:
    """Validated params for `stage`, restricted to the sections or dotted keys its dvc.yaml entry lists."""
    return restrict(load_params(params_path), stage, declared_params(stage, dvc_path))


def declared_params(stage: str, dvc_path: str | Path = "dvc.yaml") -> set[str]:
    """The params entries (`section` or `section.key`) that `stage` lists in dvc.yaml."""
    dvc = read_yaml(Path(dvc_path)) or {}
    stages = dvc.get("stages", {})
    if stage not in stages:
        raise PipelineError(f"{dvc_path} has no stage named '{stage}'.")
    declared: set[str] = set()
    for entry in stages[stage].get("params", []):
        keys = entry if isinstance(entry, str) else next(iter(entry.values()))
        declared.update([keys] if isinstance(keys, str) else keys)
    return declared
