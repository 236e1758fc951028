import re

import pytest
from pydantic import BaseModel
from ruamel.yaml import YAML

from pipeline.config import (
    CaptionParams,
    ComputeParams,
    Params,
    declared_params,
    load_params,
    read_yaml,
    stage_params,
)
from pipeline.errors import PipelineError
from tests.conftest import REPO


def _write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)


def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path):
    with pytest.raises(PipelineError) as error:
        load_params(_write(tmp_path, "negatives:\n  kk: 3\n"))
    message = str(error.value)
    assert "'negatives.kk'" in message and "k, index, max_target_similarity" in message
    assert "\n" not in message


@pytest.mark.parametrize("text, key", [
    ("negatives:\n  k: -1\n", "negatives.k"),
    ("stage1:\n  lr: fast\n", "stage1.lr"),
    ("caption:\n  backend: gpt\n", "caption.backend"),
    ("negatives:\n  index: annoy\n", "negatives.index"),
    ("data:\n  categories: [dress, dress]\n", "data.categories"),
    ("stage2:\n  epochs: 2.5\n", "stage2.epochs"),
])
def test_impossible_values_stop_with_one_sentence(tmp_path, text, key):
    with pytest.raises(PipelineError) as error:
        load_params(_write(tmp_path, text))
    assert key in str(error.value) and "\n" not in str(error.value)


def test_scientific_notation_is_a_float_as_dvc_reads_it(tmp_path):
    assert load_params(_write(tmp_path, "stage1:\n  lr: 1e-3\n")).stage1.lr == 0.001


def test_stage_view_rejects_undeclared_sections(tmp_path):
    params = _write(tmp_path, "seed: 3\n")
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text("stages:\n  mine:\n    cmd: x\n    params: [seed, negatives]\n")
    view = stage_params("mine", params, dvc)
    assert view.seed == 3 and view.negatives.k == 16
    with pytest.raises(PipelineError, match="does not declare"):
        view.stage2


def test_every_stage_declares_only_real_sections():
    dvc = YAML(typ="safe").load((REPO / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        for key in stage.get("params", []):
            assert key.split(".")[0] in Params.model_fields, (name, key)


def test_every_stage_runs_its_own_module_from_this_checkout():
    # `python -m` puts the working directory first on sys.path, so a queued or --temp experiment runs the pipeline
    # code of its own copy, not the clone an editable install points at.
    dvc = YAML(typ="safe").load((REPO / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        assert stage["cmd"] == f"python -m stages.{name}"
        assert f"stages/{name}.py" in stage["deps"] and (REPO / "stages" / f"{name}.py").is_file()


def test_single_keys_can_be_declared_and_untracked_keys_stay_readable(tmp_path):
    params = _write(tmp_path, "caption:\n  model: m\n  url: http://x\n")
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text("stages:\n  caption:\n    cmd: x\n    params: [caption.model]\n")
    view = stage_params("caption", params, dvc)
    assert view.caption.model == "m" and view.caption.url == "http://x"  # url is untracked by design
    with pytest.raises(PipelineError, match="caption.max_tokens"):
        view.caption.max_tokens


def test_caption_stage_tracks_every_key_that_changes_captions():
    """A new CaptionParams key must be either listed in dvc.yaml or deliberately UNTRACKED."""
    declared = declared_params("caption", REPO / "dvc.yaml")
    tracked = {d.split(".", 1)[1] for d in declared if d.startswith("caption.")}
    assert tracked == set(CaptionParams.model_fields) - CaptionParams.UNTRACKED


def test_speed_only_keys_are_readable_without_being_declared(tmp_path):
    """compute.workers / compile / processes change speed only: readable by any stage, never re-running one."""
    params = _write(tmp_path, "compute:\n  workers: 3\n  precision: bf16\n")
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text("stages:\n  decode:\n    cmd: x\n    params: [data]\n")
    view = stage_params("decode", params, dvc)
    assert view.compute.workers == 3 and view.compute.processes == 1
    with pytest.raises(PipelineError, match="compute.precision"):
        view.compute.precision


def test_every_stage_that_runs_an_encoder_tracks_its_precision():
    for stage in ("stage1", "embed", "stage2", "evaluate"):
        assert "compute.precision" in declared_params(stage, REPO / "dvc.yaml"), stage
    assert ComputeParams.UNTRACKED == set(ComputeParams.model_fields) - {"precision"}


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key of a params section, dotted, down to the leaves."""
    keys = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += _fields(field.annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _named(raw: dict, key: str) -> bool:
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_params_yaml_names_every_key_so_dvc_never_runs_on_a_code_default():
    """The code holds each default; DVC tracks only what params.yaml names (docs/design.md#params-are-tracked-
    exactly), so a key params.yaml left out would silently follow a default changed in code."""
    raw = read_yaml(REPO / "params.yaml")
    keys = _fields(Params)
    assert len(keys) > 80 and "negatives.anchor" in keys and "index.hnsw_m" in keys  # the walk reaches the leaves
    missing = [key for key in keys if not _named(raw, key)]
    assert not missing, f"params.yaml does not name {missing}; add each with its value"


def test_params_yaml_describes_every_key():
    """params.yaml's comments are the one place a key's meaning is written (docs/params.md links there): every key has
    a comment on its line, or shares the comment of the line above or the continuation line below."""
    lines = (REPO / "params.yaml").read_text().splitlines()
    path: list[str] = []
    described = set()
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([a-z_0-9]+):(.*)$", line)
        if not match:
            continue
        path = path[: len(match.group(1)) // 2] + [match.group(2)]
        above = lines[number - 1].strip() if number else ""
        below = lines[number + 1] if number + 1 < len(lines) else ""
        if "#" in match.group(3) or above.startswith("#") or re.match(r"^ +#", below):
            described.add(".".join(path))
    missing = [key for key in _fields(Params) if key not in described]
    assert not missing, f"params.yaml does not describe {missing}; add a comment saying what each means"

