"""Shared fixtures: a tiny demo catalogue written once per session in FashionIQ's layout, the shared tiny DAG, the
warm server, and the fresh demo run that works in the background while the rest of the suite runs."""

from __future__ import annotations

import os
import sys

# One OpenMP thread a process, set before torch or FAISS starts: the suite runs processes side by side (stages, the
# warm server, vLLM, the background demo run) on two cores, and two processes whose threads spin on the same cores
# slow each other several-fold, while the tiny models here gain nothing from a second thread (docs/testing.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

from pipeline.config import SyntheticParams  # noqa: E402
from pipeline.data.synthetic.synthesize import write_catalogue  # noqa: E402

pytest_plugins = ["tests.support.search_fixture"]  # `search_root`: a small real search index, no DVC

if TYPE_CHECKING:
    from tests.support.background import BackgroundRun

TINY = SyntheticParams(families_train=4, families_val=3, family_size=3, distractors_val=4, image_size=32)
REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
FASHION_CIR = str(Path(sys.executable).parent / "fashion-cir")  # the console script of this environment


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("catalogue") / "synthetic"
    write_catalogue(root, TINY, seed=0, workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight LLaVA checkpoint directory built in code (tests/support/tiny_llava.py)."""
    from tests.support.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="session")
def warm_stages() -> Iterator[dict[str, str]]:
    """The environment that hands DAG stages to one warm server for the whole test run (pipeline/warm.py), as
    `make repro` runs them: for the end-to-end tests that need a DAG's results, not how its stages start
    (tests/test_warm.py shows the outputs are the same bytes; `tiny_repo` runs each stage in its own interpreter)."""
    from pipeline.warm import SOCKET_VARIABLE, warm_server

    with warm_server() as address:
        assert address is not None, "the warm server did not start"
        yield {SOCKET_VARIABLE: address}


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the committed tree with tiny params, reproduced once with `dvc repro` (shared by the end-to-end
    tests; those that change it restore what they change)."""
    from tests.support.dag import ALL_STAGES, TINY_PARAMS, ran, run, tiny_copy

    root = tiny_copy(tmp_path_factory.mktemp("repo"), TINY_PARAMS)
    first = run(["dvc", "repro"], root)
    assert ran(first.stdout) == ALL_STAGES
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "reference run"], root)
    return root


@pytest.fixture(scope="session")
def fresh_demo_run(tmp_path_factory: pytest.TempPathFactory, warm_stages: dict) -> BackgroundRun:
    """`dvc repro` of the committed params (the demo, minutes of training) in a fresh copy of the tree, started in
    the background as the session starts (`start_background_runs`); the test that reads it runs last and waits."""
    from tests.support.background import BackgroundRun
    from tests.support.dag import tiny_copy

    root = tiny_copy(tmp_path_factory.mktemp("fresh-demo") / "repo", {})  # the committed params, unchanged
    return BackgroundRun(["dvc", "repro"], root, env=warm_stages)  # warm, as `make repro` runs it


BACKGROUND = ("fresh_demo_run",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that wait for a background run go last: the run overlaps the whole suite, which spends much of its
    time in subprocesses and servers starting, with a core to spare."""
    waiting = [item for item in items if set(BACKGROUND) & set(getattr(item, "fixturenames", ()))]
    for item in waiting:
        items.remove(item)
        items.append(item)


@pytest.fixture(scope="session", autouse=True)
def start_background_runs(request: pytest.FixtureRequest) -> None:
    """Start, before the first test, every background run a selected test will wait for."""
    needed = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    for name in BACKGROUND:
        if name in needed:
            request.getfixturevalue(name)

