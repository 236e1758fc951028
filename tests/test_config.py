import pytest
from ruamel.yaml import YAML

from pipeline.config import Params, load_params, stage_params
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
