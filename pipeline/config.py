"""Typed, validated params, and the per-stage view that lets a stage read only what dvc.yaml declares for it.

`params.yaml` is validated whole when any stage starts: an unknown key, a wrong type or an impossible value stops
the stage with one sentence naming the key and what is allowed. A stage then gets a `StageParams` that exposes
only the sections its dvc.yaml entry lists, so code cannot silently depend on a param DVC does not track (which
would make `dvc exp run -S ...` skip a stage that should re-run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML

from pipeline.attributes import CATEGORIES
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


class DataParams(_Section):
    source: Literal["fashioniq"] = "fashioniq"
    root: str = "data/synthetic"
    categories: list[Literal["dress", "shirt", "toptee"]] = Field(default_factory=lambda: list(CATEGORIES),
                                                                    min_length=1)

    @field_validator("categories")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("categories must not repeat")
        return value


class CaptionParams(_Section):
    backend: Literal["catalog"] = "catalog"
    batch_size: PositiveInt = 64


class TripletsParams(_Section):
    generated_per_category: NonNegativeInt = 2000
    max_changed_fields: Annotated[int, Field(ge=1, le=3)] = 2
    reference_prompt: bool = True


class ModelParams(_Section):
    """The base model: an open_clip architecture and its weights."""

    arch: str = "fciq-tiny"
    pretrained: str = ""


class EmbedParams(_Section):
    batch_size: PositiveInt = 256


class NegativesParams(_Section):
    k: NonNegativeInt = 16
    index: Literal["flat", "hnsw", "ivf"] = "flat"
    max_target_similarity: Annotated[float, Field(gt=0, le=1)] = 1.0


class TrainParams(_Section):
    epochs: NonNegativeInt = 20
    batch_size: Annotated[int, Field(ge=2)] = 128
    lr: PositiveFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.1
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    temperature: PositiveFloat = 0.05


class Stage2Params(TrainParams):
    composition: Literal["sum", "combiner"] = "combiner"
    epochs: NonNegativeInt = 4
    temperature: PositiveFloat = 0.1
    static_negatives: NonNegativeInt = 128


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
    embed: EmbedParams = EmbedParams()
    negatives: NegativesParams = NegativesParams()
    stage1: TrainParams = TrainParams()
    stage2: Stage2Params = Stage2Params()
    eval: EvalParams = EvalParams()


def _yaml(path: Path) -> Any:
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
    return f"{path}: {key} = {first.get('input')!r} is not allowed: {first['msg'][0].lower()}{first['msg'][1:]}."


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file."""
    path = Path(path)
    raw = _yaml(path) or {}
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections (seed, data, model, ...).")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise PipelineError(_sentence(path, raw, error)) from None


class StageParams:
    """The params a stage may read: only the sections its dvc.yaml entry declares."""

    def __init__(self, stage: str, params: Params, declared: set[str]):
        self._stage, self._params, self._declared = stage, params, declared

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._declared:
            raise PipelineError(
                f"stage '{self._stage}' reads params '{name}' but dvc.yaml does not declare it; add it to the "
                f"stage's params so DVC re-runs the stage when it changes.")
        return getattr(self._params, name)


def stage_params(stage: str, params_path: str | Path = "params.yaml", dvc_path: str | Path = "dvc.yaml") -> StageParams:
    """Validated params for `stage`, restricted to the top-level keys its dvc.yaml entry lists under `params`."""
    params = load_params(params_path)
    dvc = _yaml(Path(dvc_path)) or {}
    stages = dvc.get("stages", {})
    if stage not in stages:
        raise PipelineError(f"{dvc_path} has no stage named '{stage}'.")
    declared: set[str] = set()
    for entry in stages[stage].get("params", []):
        keys = entry if isinstance(entry, str) else next(iter(entry.values()))
        for key in [keys] if isinstance(keys, str) else keys:
            declared.add(key.split(".")[0])
    return StageParams(stage, params, declared)
