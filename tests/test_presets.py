import shutil

import pytest

from pipeline import presets
from pipeline.config import load_params
from pipeline.errors import PipelineError
from tests.conftest import REPO


@pytest.fixture
def params_copy(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    return path


@pytest.mark.parametrize("name", sorted(presets.available()))
def test_each_preset_merges_into_params_keeping_comments_and_other_keys(params_copy, name):
    before = load_params(params_copy)
    changes = presets.apply_preset(name, params_copy)
    after = load_params(params_copy)
    assert (changes or name == "backbone-clip") and all(old != new for _, old, new in changes)  # it restores defaults
    changed = {key for key, _, _ in changes}
    for section in ("data", "model", "stage2"):
        old = getattr(before, section).model_dump()
        for key, value in getattr(after, section).model_dump().items():
            if f"{section}.{key}" not in changed:
                assert old[key] == value
    text = params_copy.read_text()
    assert "# One seed drives everything" in text and 'url: ""' in text  # comments and quoting kept
    assert presets.apply_preset(name, params_copy) == []  # applying twice changes nothing more


def test_the_paper_preset_is_vit_b32_on_fashioniq_with_llava(params_copy):
    presets.apply_preset("paper-fashioniq", params_copy)
    params = load_params(params_copy)
    assert (params.model.arch, params.model.pretrained, params.model.preprocess) == ("ViT-B-32", "openai", "targetpad")
    assert (params.data.source, params.caption.backend) == ("fashioniq", "vllm")
    assert params.caption.model == "llava-hf/llava-1.5-7b-hf" and params.stage1.epochs > 0


def test_a_bad_preset_is_one_sentence_and_leaves_params_alone(params_copy, tmp_path, monkeypatch):
    (tmp_path / "presets").mkdir()
    monkeypatch.setattr(presets, "PRESETS_DIR", tmp_path / "presets")
    (tmp_path / "presets" / "typo.yaml").write_text("negatives:\n  kk: 3\n")
    original = params_copy.read_text()
    with pytest.raises(PipelineError, match=r"typo.yaml: unknown key 'negatives.kk'"):
        presets.apply_preset("typo", params_copy)
    with pytest.raises(PipelineError, match=r"no preset named 'nope'; the presets are: typo"):
        presets.apply_preset("nope", params_copy)
    assert params_copy.read_text() == original


def test_the_command_lists_each_preset_with_its_first_comment_line(capsys):
    presets.main([])
    lines = capsys.readouterr().out.splitlines()
    assert [line.partition(":")[0] for line in lines] == sorted(presets.available()) and len(lines) >= 7
    assert "paper-fashioniq: " in "\n".join(lines) and all(line.partition(": ")[2] for line in lines)


def test_a_preset_is_only_a_name_the_package_holds(params_copy):
    original = params_copy.read_text()
    for name in ("../params", "__init__", "catalog.yaml", ""):
        with pytest.raises(PipelineError, match=r"^no preset named '.*'; the presets are: backbone-clip, .*\.$"):
            presets.apply_preset(name, params_copy)
    assert params_copy.read_text() == original
