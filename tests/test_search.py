"""`fashion-cir search` on the tiny DAG's index: the command a person runs, its answers and its one-sentence errors."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.paths import Paths
from pipeline.search.engine import SearchEngine
from tests.conftest import FASHION_CIR

pytestmark = pytest.mark.e2e

def search_command(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`fashion-cir search` as a person runs it: the console script in a process of its own."""
    return subprocess.run([FASHION_CIR, "search", "--root", str(root), *args], capture_output=True, text=True)


def search(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`fashion-cir search` through the console script's own `main` in this process: what it prints and its exit
    status, without a new interpreter importing torch for every call (`search_command` shows the two agree)."""
    argv = ["search", "--root", str(root), *args]
    stdout, stderr = io.StringIO(), io.StringIO()
    status = 0
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            main(argv)
        except SystemExit as exit:  # as the interpreter exits: None is status 0, any other non-integer 1
            status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    return subprocess.CompletedProcess(argv, status, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def reference(tiny_repo: Path) -> str:
    return str(pd.read_parquet(Paths(tiny_repo).val_rankings)["reference"].iloc[0])


def test_one_query_gives_k_ranked_results_without_the_reference(tiny_repo: Path, reference: str):
    result = search_command(tiny_repo, "--image", reference, "--text", "is red with long sleeves", "--k", "5",
                            "--json")
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    (in_process,) = json.loads(search(tiny_repo, "--image", reference, "--text", "is red with long sleeves", "--k",
                                      "5", "--json").stdout)
    assert in_process["hits"] == answer["hits"] and in_process["query_text"] == answer["query_text"]
    names = [hit["name"] for hit in answer["hits"]]
    assert len(names) == 5 and reference not in names and len(set(names)) == 5
    scores = [hit["score"] for hit in answer["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert all(Path(hit["path"]).is_file() for hit in answer["hits"])
    assert answer["query_text"].startswith("Is red with long sleeves. ")  # the reference's caption follows
    engine = SearchEngine.open(Paths(tiny_repo))
    assert [h.name for h in engine.search(reference, "is red with long sleeves", 5).hits] == names


def test_an_image_file_and_a_batch_of_queries(tiny_repo: Path, reference: str, tmp_path: Path):
    gallery = pd.read_parquet(Paths(tiny_repo).index_dir / "gallery.parquet").set_index("name")
    image = tiny_repo / gallery.at[reference, "path"]  # stored relative to the repository
    outside = tmp_path / "photo.png"
    shutil.copy(image, outside)
    queries = tmp_path / "queries.csv"
    pd.DataFrame({"image": [str(outside), reference, str(image), image.name],
                  "text": ["is blue", "has a v-neck", "is blue", "is blue"]}).to_csv(queries, index=False)
    result = search(tiny_repo, "--queries", str(queries), "--k", "3", "--json")
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [len(a["hits"]) for a in answers] == [3, 3, 3, 3]
    assert answers[0]["query_text"] == "Is blue"  # a file from outside the gallery has no caption to append
    # the gallery file's own path and its file name are the gallery image: its name, its caption, its category
    by_name = json.loads(search(tiny_repo, "--image", reference, "--text", "is blue", "--k", "3", "--json").stdout)[0]
    for answer in answers[2:]:
        assert answer["reference"] == reference and answer["query_text"] == by_name["query_text"] != "Is blue"
        assert answer["hits"] == by_name["hits"] and answer["filters"] == by_name["filters"]
    table = search(tiny_repo, "--image", reference, "--text", "is blue", "--k", "2")
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 3


def test_text_only_image_only_and_filters(tiny_repo: Path, reference: str):
    gallery = pd.read_parquet(Paths(tiny_repo).index_dir / "gallery.parquet").set_index("name")
    category = gallery.at[reference, "category"]
    (text,) = json.loads(search(tiny_repo, "--text", "a red dress", "--k", "30", "--json").stdout)
    assert text["kind"] == "text" and text["filters"] == [] and len({h["category"] for h in text["hits"]}) > 1
    (image,) = json.loads(search(tiny_repo, "--image", reference, "--k", "4", "--json").stdout)
    assert image["kind"] == "image" and image["filters"] == [f"category = {category}"]
    assert {h["category"] for h in image["hits"]} == {category} and reference not in [h["name"] for h in image["hits"]]
    (everywhere,) = json.loads(search(tiny_repo, "--image", reference, "--every-category", "--k", "60",
                                      "--json").stdout)
    assert everywhere["filters"] == [] and len({h["category"] for h in everywhere["hits"]}) == 3
    (shirts,) = json.loads(search(tiny_repo, "--text", "is red", "--where", "category in (shirt)", "--k", "5",
                                  "--json").stdout)
    assert {h["category"] for h in shirts["hits"]} == {"shirt"} and shirts["filters"] == ["category in (shirt)"]
    table = search(tiny_repo, "--image", reference, "--k", "2").stdout.splitlines()
    assert table[0].startswith(f"image: {reference}  where category = {category}  (")


@pytest.mark.parametrize("args, message", [
    (["--image", "no-such-image.jpg", "--text", "is red"], "neither a gallery image name nor an existing file"),
    (["--text", "  "], "the query is empty; give a text"),
    ([], "give --image and/or --text (one query), or --queries FILE"),
    (["--image", "{reference}", "--text", "is red", "--k", "0"], "k = 0 is not allowed"),
    (["--text", "is red", "--where", "colour = red"], "names an unknown column 'colour'; the gallery's columns are"),
    (["--text", "is red", "--where", "colour red"], "is not one this search reads"),
    (["--image", "{broken}", "--text", "is red"], "is not an image Pillow can read"),
])
def test_bad_input_is_one_sentence_and_exit_status_1(tiny_repo: Path, reference: str, tmp_path: Path,
                                                    args: list[str], message: str):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    result = search(tiny_repo, *[a.format(reference=reference, broken=broken) for a in args])
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_no_index_or_another_models_index_is_one_sentence(tiny_repo: Path, reference: str, tmp_path: Path):
    nothing = search_command(tmp_path, "--image", reference, "--text", "is red")  # the console script's own exit
    assert nothing.returncode == 1 and nothing.stderr.startswith("error: ") and "no search index at" in nothing.stderr
    assert "Traceback" not in nothing.stderr and len(nothing.stderr.strip().splitlines()) == 1
    other = search(tiny_repo, "--image", reference, "--text", "is red", "--checkpoint",
                   str(Paths(tiny_repo).stage1_dir))
    assert other.returncode == 1 and "was built from another model" in other.stderr
    copy = tmp_path / "repo"
    shutil.copytree(Paths(tiny_repo).index_dir, Paths(copy).index_dir)
    missing_model = search(copy, "--image", reference, "--text", "is red")
    assert missing_model.returncode == 1 and "model.pt is missing" in missing_model.stderr


def test_every_val_query_has_its_top_ten_and_target_rank(tiny_repo: Path):
    rankings = pd.read_parquet(Paths(tiny_repo).val_rankings)
    metrics = json.loads(Paths(tiny_repo).eval_metrics.read_text())
    assert len(rankings) == sum(metrics[c]["queries"] for c in ("dress", "shirt", "toptee"))
    for row in rankings.itertuples():
        assert len(row.top) == 10 and len(row.scores) == 10
        if row.target in list(row.top):
            assert list(row.top).index(row.target) + 1 == row.target_rank
        else:
            assert row.target_rank > 10
