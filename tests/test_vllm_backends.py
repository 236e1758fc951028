"""The MLLM backends against real engines: a real vLLM server (CPU build), vLLM's offline engine and transformers,
all on a tiny random-weight LLaVA loaded from a checkpoint directory exactly as a user's model is.

Random weights write random (but grammar-constrained) JSON, so these tests check the round trip, schema validity,
token counts, resume and errors, not the words.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.captioning.base import Caption, ImageToCaption
from pipeline.captioning.cache import CaptionCache
from pipeline.captioning.caption import caption_images
from pipeline.captioning.hf import TransformersCaptioner
from pipeline.captioning.vllm_client import VLLMServerCaptioner
from pipeline.captioning.vllm_server import check_serves, free_port, launch, running_server, stop
from pipeline.config import CaptionParams
from pipeline.data.fashioniq import FashionIQ
from pipeline.errors import PipelineError
from tests.support.vllm_env import REPO, SERVE_ARGS, SERVE_COMMAND, SERVER_ENV, VLLM_PYTHON, needs_vllm

STARTUP_TIMEOUT = 300


@pytest.fixture(scope="module")
def server_env():
    saved = {k: os.environ.get(k) for k in SERVER_ENV}
    os.environ.update(SERVER_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _params(model: Path, **overrides) -> CaptionParams:
    return CaptionParams(backend="vllm", model=str(model), image_size=64, max_tokens=200, serve_command=SERVE_COMMAND,
                         serve_args=SERVE_ARGS, max_concurrency=4, startup_timeout=STARTUP_TIMEOUT,
                         **overrides)


def _images(root: Path):
    dataset = FashionIQ(root, ["dress", "shirt", "toptee"])
    return dataset.images("train"), dataset.tags("train")


def _assert_schema_valid(table):
    assert len(table) > 0
    for raw in table["attributes"]:
        attributes = json.loads(raw)
        assert attributes["category"] in ("dress", "shirt", "toptee") and attributes["colors"]


@needs_vllm
def test_server_captions_and_resumes_after_it_is_killed_mid_run(tiny_catalogue, tiny_llava, tmp_path, server_env):
    images, tags = _images(tiny_catalogue)
    images = images.head(12)
    cache = CaptionCache(tmp_path / "cache.sqlite")
    params = _params(tiny_llava)

    with launch(params, params.model) as server:
        check_serves(server.url, str(tiny_llava))
        with pytest.raises(PipelineError, match="serves"):
            check_serves(server.url, "llava-hf/llava-1.5-7b-hf")
        captioner = VLLMServerCaptioner(params.model_copy(update={"url": server.url}))
        real_caption = captioner.caption

        def caption_then_kill_server(batch):
            results = real_caption(batch)
            stop(server.process)  # the server dies after the first batch is answered
            return results

        captioner.caption = caption_then_kill_server  # type: ignore[method-assign]
        with pytest.raises(PipelineError, match="lost the vLLM server"):
            caption_images(images, tags, captioner, cache, batch_size=4)
        first_usage = captioner.usage()
        assert captioner.versions()["vllm"].startswith("0.")
        captioner.close()
    assert len(cache) == 4  # the first batch was committed before the server died
    assert first_usage["prompt_tokens"] > 0 and first_usage["completion_tokens"] > 0

    # The re-run starts its own server (caption.url empty), as the stage does, and stops it when done.
    resumed = VLLMServerCaptioner(params, log_path=tmp_path / "server.log")
    with resumed:
        table, report = caption_images(images, tags, resumed, cache, batch_size=4)
    usage = resumed.usage()
    assert report["cached"] == 4
    assert usage["requests"] - usage["retries"] == len(images) - 4  # only what was missing was asked for
    assert report["captioned"] + report.get("failed", 0) == len(images) - 4
    _assert_schema_valid(table)
    assert "Application startup complete" in (tmp_path / "server.log").read_text()
    with pytest.raises(PipelineError, match="does not answer"):  # stopped: nothing listens any more
        check_serves(resumed.url, str(tiny_llava))


@needs_vllm
def test_a_server_that_exits_at_startup_is_one_clear_error(tmp_path, server_env):
    params = _params(tmp_path / "no-such-model")
    started = time.monotonic()
    with pytest.raises(PipelineError, match="exited with status"):
        with launch(params, params.model):
            pass
    assert time.monotonic() - started < STARTUP_TIMEOUT  # noticed at once, not at the time limit


def test_a_server_that_never_becomes_healthy_times_out_and_is_stopped(tmp_path):
    # Stand-in for a hung server (it listens to nothing): the real thing's failure to answer /health.
    never_healthy = [sys.executable, "-c", "import time; time.sleep(600)"]
    with pytest.raises(PipelineError, match=r"did not answer .*/health within caption.startup_timeout = 2 s"):
        with running_server(never_healthy, free_port(), startup_timeout=2):
            pass
    assert subprocess.run(["pgrep", "-f", "time.sleep\\(600\\)"], capture_output=True).returncode == 1


def test_a_missing_serve_command_is_one_clear_error():
    with pytest.raises(PipelineError, match="was not found"):
        with running_server(["no-such-vllm-binary", "serve"], free_port(), startup_timeout=2):
            pass


def test_an_unreachable_url_is_one_clear_error():
    with pytest.raises(PipelineError, match="does not answer"):
        check_serves(f"http://127.0.0.1:{free_port()}", "m")


def test_transformers_backend_captions_with_a_checkpoint_directory(tiny_catalogue, tiny_llava, tmp_path):
    images, tags = _images(tiny_catalogue)
    params = CaptionParams(backend="transformers", model=str(tiny_llava), image_size=64, max_tokens=200,
                           dtype="float32")
    with TransformersCaptioner(params, device="cpu") as captioner:
        table, report = caption_images(images.head(4), tags, captioner, CaptionCache(tmp_path / "c.sqlite"),
                                       batch_size=4)
        usage, versions = captioner.usage(), captioner.versions()
    _assert_schema_valid(table)  # xgrammar keeps even random weights inside the schema
    assert report["captioned"] + report.get("failed", 0) == 4 and usage["completion_tokens"] > 0
    assert all(f["reason"] for f in report["failures"]), report["failures"]  # e.g. rambling past max_tokens
    assert "transformers" in versions


def test_transformers_backend_names_a_model_it_cannot_load(tmp_path, tiny_catalogue):
    images, _ = _images(tiny_catalogue)
    captioner = TransformersCaptioner(CaptionParams(backend="transformers", model=str(tmp_path / "nothing")))
    item = ImageToCaption(images.loc[0, "name"], "dress", Path(images.loc[0, "path"]))
    with pytest.raises(PipelineError, match="could not be loaded"):
        captioner.caption([item])


OFFLINE_SCRIPT = """
import json, sys
from pathlib import Path
from pipeline.captioning.base import Caption, ImageToCaption
from pipeline.captioning.vllm_offline import VLLMOfflineCaptioner
from pipeline.config import CaptionParams
params = CaptionParams.model_validate_json(sys.argv[1])
items = [ImageToCaption(Path(p).stem, "dress", Path(p)) for p in sys.argv[2:]]
with VLLMOfflineCaptioner(params) as captioner:
    results = captioner.caption(items)
    print("RESULT " + json.dumps({"raw": [r.raw if isinstance(r, Caption) else None for r in results],
                                   "usage": captioner.usage(), "versions": captioner.versions()}))
"""


@needs_vllm
def test_offline_engine_gives_what_the_server_gives(tiny_catalogue, tiny_llava, tmp_path, server_env):
    images, _ = _images(tiny_catalogue)
    paths = list(images["path"].head(3))
    params = _params(tiny_llava).model_copy(update={"backend": "vllm-offline"})
    result = subprocess.run([str(VLLM_PYTHON), "-c", OFFLINE_SCRIPT, params.model_dump_json(), *paths], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    offline = json.loads(lines[0][len("RESULT "):])
    assert offline["usage"]["completion_tokens"] > 0 and offline["versions"]["vllm"].startswith("0.")

    with launch(_params(tiny_llava), str(tiny_llava)) as server:
        with VLLMServerCaptioner(_params(tiny_llava, url=server.url)) as online:
            served = online.caption([ImageToCaption(Path(p).stem, "dress", Path(p)) for p in paths])
    assert [r.raw if isinstance(r, Caption) else None for r in served] == offline["raw"]


@needs_vllm
def test_captions_are_balanced_across_several_servers(tiny_catalogue, tiny_llava, tmp_path, server_env):
    """`caption.url` lists two running servers: every request is answered by one of them, both take a share, and
    the captions are as valid as from one server."""
    images, tags = _images(tiny_catalogue)
    images = images.head(16)
    params = _params(tiny_llava).model_copy(update={"max_concurrency": 2})
    with launch(params, params.model, tmp_path / "a.log") as first, \
            launch(params, params.model, tmp_path / "b.log") as second:
        captioner = VLLMServerCaptioner(params.model_copy(update={"url": [first.url, f"{second.url}/"]}))
        with captioner:
            table, report = caption_images(images, tags, captioner, CaptionCache(tmp_path / "cache.sqlite"),
                                           batch_size=8)
            answered, usage = captioner.client.answered, captioner.usage()
            assert captioner.url == f"{first.url}, {second.url}"
    assert len(answered) == 2 and min(answered) >= 4 and sum(answered) == usage["requests"]
    assert report["captioned"] + report.get("failed", 0) == len(images)
    _assert_schema_valid(table)
    for log in ("a.log", "b.log"):  # each server's own log shows it answered chat completions
        assert "POST /v1/chat/completions" in (tmp_path / log).read_text()


def test_a_url_list_with_an_unreachable_server_is_one_clear_error():
    params = CaptionParams(backend="vllm", url=["http://127.0.0.1:9", "http://127.0.0.1:1"])
    with pytest.raises(PipelineError, match=r"caption.url = 'http://127.0.0.1:9' does not answer"):
        VLLMServerCaptioner(params).client.complete([])
