"""A running `fashion-cir serve` follows its index: a shop's catalogue changes (50 products added, 20 removed), the
`index` stage runs in its own process while 8 clients query, and every answer comes wholly from the old or wholly
from the new gallery, none fails or comes short, and the new products are found within seconds of the stage ending;
on FAISS and on a Milvus server, and with two replicas against one Milvus server."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import IndexParams
from tests.support.serve import REPO, serving
from tests.support.shop_changes import change_shop

pytestmark = pytest.mark.e2e
ADDED, REMOVED, CLIENTS, K = 50, 20, 8, 20
FOLLOW = "0.5"
REINDEX = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pipeline.config import GalleryParams, IndexParams, Params
from pipeline.paths import Paths
from pipeline.search import index
from tests.support.search_fixture import shop_data
shop, settings = sys.argv[2], IndexParams.model_validate_json(sys.argv[3])
report = index.run(Params(data=shop_data(shop), gallery=GalleryParams(root="gallery"), index=settings), Paths())
print(json.dumps(report))
"""


def reindex(root: Path, shop: Path, settings: IndexParams) -> dict:
    """The `index` stage in its own process, as `dvc repro` runs it, over the live gallery folder root/gallery."""
    done = subprocess.run([sys.executable, "-c", REINDEX, str(REPO), str(shop), settings.model_dump_json()],
                          cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def live_root(built: Path, shop: Path, work: Path, settings: IndexParams) -> Path:
    """A copy of a built shop search whose gallery is a catalogue folder of its own (root/gallery), indexed."""
    root = work / "root"
    shutil.copytree(built, root, symlinks=True)
    shutil.copytree(shop, root / "gallery")
    reindex(root, shop, settings)
    return root


def gallery_names(root: Path) -> set[str]:
    return set(pd.read_parquet(root / "index" / "gallery.parquet")["name"])


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}/api/search", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


class Clients:
    """`count` threads, each on its own keep-alive connection, posting queries in turn until stopped; every
    (status, answer) kept."""

    def __init__(self, url: str, queries: list[dict], count: int = CLIENTS):
        self.address, self.queries = urlparse(url), queries
        self.answers: list[tuple[int, dict, dict]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.ask, args=(i,)) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def ask(self, number: int) -> None:
        connection = http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=30)
        turn = number
        while not self.stopping.is_set():
            query = self.queries[turn % len(self.queries)]
            turn += 1
            try:
                connection.request("POST", "/api/search", json.dumps(query), {"Content-Type": "application/json"})
                answer = connection.getresponse()
                status, body = answer.status, json.loads(answer.read())
            except (OSError, http.client.HTTPException, ValueError) as error:
                status, body = 0, {"error": repr(error)}
                connection.close()
                connection = http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=30)
            self.answers.append((status, query, body))
        connection.close()

    def stop(self) -> list[tuple[int, dict, dict]]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)
        return self.answers


def wait_for_version(url: str, version: str, seconds: float = 30) -> float:
    """Seconds until the server at `url` serves `version`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if get(f"{url}/health")["version"] == version:
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"{url} still serves {get(f'{url}/health')['version']}, not {version}, after {seconds} s")


def queries_for(root: Path, keep: str) -> list[dict]:
    """Text, composed, image and filtered queries, each with more allowed gallery images than K in either version."""
    return [{"text": "a red dress", "k": K}, {"text": "striped", "k": K, "every_category": True},
            {"reference": keep, "text": "is blue", "k": K, "every_category": True},
            {"reference": keep, "k": K, "every_category": True},
            {"text": "a shirt", "k": K, "where": ["price <= 60"]}]


def check_reindex_while_querying(root: Path, shop: Path, url: str, settings: IndexParams, tmp_path: Path
                                 ) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """8 clients query `url` while the catalogue changes and the stage re-indexes; every answer checked. The rows
    added and removed, and the seconds from the stage's end to the new version served."""
    before, old = gallery_names(root), get(f"{url}/health")["version"]
    keep = sorted(before)[0]
    clients = Clients(url, queries_for(root, keep))
    time.sleep(1.0)
    added, removed = change_shop(root / "gallery", tmp_path / "new", ADDED, REMOVED, keep={keep})
    report = reindex(root, shop, settings)
    delay = wait_for_version(url, report["version"])
    time.sleep(1.0)
    answers = clients.stop()
    after = gallery_names(root)
    assert len(after) == len(before) + ADDED - REMOVED and report["version"] != old
    galleries = {old: before, report["version"]: after}
    failed = [(status, body) for status, _, body in answers if status != 200]
    assert not failed, failed[:3]
    seen = {body["version"] for _, _, body in answers}
    assert seen == set(galleries)  # answers from both versions, and from no other
    for _, query, body in answers:
        names = {hit["name"] for hit in body["hits"]}
        assert names <= galleries[body["version"]], (query, names - galleries[body["version"]])
        assert len(body["hits"]) == K, query  # nothing dropped
    print(f"{len(answers)} answers, {sum(b['version'] == old for _, _, b in answers)} from the old version; "
          f"the new one served {delay:.2f} s after the stage ended")
    return added, removed, delay


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_a_served_search_follows_a_reindex_without_failing_a_query(backend: str, shop_search_root: Path,
                                                                  shop_catalogue: Path, tmp_path: Path,
                                                                  request: pytest.FixtureRequest):
    uri = request.getfixturevalue("milvus_server") if backend == "milvus" else ""
    settings = IndexParams(backend=backend, uri=uri)
    root = live_root(shop_search_root, shop_catalogue, tmp_path, settings)
    with serving(root, tmp_path / "serve.log", "--follow-seconds", FOLLOW) as url:
        added, removed, delay = check_reindex_while_querying(root, shop_catalogue, url, settings, tmp_path)
        assert delay < 5, delay
        for row in added.itertuples():  # each new product: found by its own photo, by its products.csv value
            photo = Path(row.source).read_bytes()
            upload = urllib.request.Request(f"{url}/api/search", *multipart({"k": "1", "every_category": "true"},
                                                                           photo))
            with urllib.request.urlopen(upload, timeout=30) as answer:
                assert json.loads(answer.read())["hits"][0]["name"] == Path(row.image).stem
            assert post(url, {"reference": row.image, "k": 3})["reference"] == Path(row.image).stem
            with urllib.request.urlopen(f"{url}/images/{row.image}", timeout=10) as image:
                assert image.read() == photo
        for image in removed["image"]:
            with pytest.raises(urllib.error.HTTPError) as gone:
                urllib.request.urlopen(f"{url}/images/{Path(image).stem}", timeout=10)
            assert gone.value.code == 404
    if backend == "milvus":
        described = json.loads((root / "index" / "index.json").read_text())
        assert described["milvus"]["collection"] == f"{settings.collection}_b"  # the slot the old version did not use


def multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "fashion-cir-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.png"\r\n'
                 f'Content-Type: image/png\r\n\r\n'.encode() + image + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def metric(url: str, name: str, **labels: str) -> float:
    """A sample's value from /metrics, read with prometheus-client's own parser."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels} in /metrics")


def test_two_replicas_follow_one_milvus_server(shop_search_root: Path, shop_catalogue: Path, milvus_server: str,
                                               tmp_path: Path):
    settings = IndexParams(backend="milvus", uri=milvus_server)
    root = live_root(shop_search_root, shop_catalogue, tmp_path, settings)
    with serving(root, tmp_path / "one.log", "--follow-seconds", FOLLOW) as one, \
            serving(root, tmp_path / "two.log", "--follow-seconds", FOLLOW) as two:
        assert get(f"{one}/health")["version"] == get(f"{two}/health")["version"]
        added, _ = change_shop(root / "gallery", tmp_path / "new", ADDED, REMOVED)
        version = reindex(root, shop_catalogue, settings)["version"]
        for url in (one, two):
            assert wait_for_version(url, version) < 5
        size = len(gallery_names(root))
        for query in queries_for(root, Path(added["image"].iat[0]).stem):
            assert post(one, query)["hits"] == post(two, query)["hits"]
        for url in (one, two):
            assert metric(url, "fashion_cir_index_swaps_total") == 1
            assert metric(url, "fashion_cir_gallery_images") == size
            assert metric(url, "fashion_cir_index_info", version=version) == 1
            assert metric(url, "fashion_cir_requests_total", route="/api/search", kind="composed", status="200") >= 1


def test_a_retrained_model_is_followed_and_a_pinned_checkpoint_keeps_its_index(search_root: Path,
                                                                                tiny_catalogue: Path,
                                                                                tmp_path: Path,
                                                                                caplog: pytest.LogCaptureFixture):
    """stage 2 retrained, then `index`: the server swaps in the new model with the new index; a server started with
    --checkpoint on the old model cannot serve the new index, says so once, and keeps serving the old one."""
    from pipeline.config import DataParams, GalleryParams, ModelParams, Params
    from pipeline.models.clip import create_model, save_checkpoint
    from pipeline.paths import Paths
    from pipeline.search import index
    from pipeline.search.engine import SearchEngine
    from pipeline.search.live import LiveEngine

    root = tmp_path / "root"
    shutil.copytree(search_root, root, symlinks=True)
    paths, pinned_dir = Paths(root), tmp_path / "pinned"
    shutil.copytree(paths.stage2_dir, pinned_dir)
    live, pinned = LiveEngine(paths, SearchEngine.open(paths)), LiveEngine(paths, SearchEngine.open(paths, pinned_dir),
                                                                           pinned_dir)
    old = live.current
    assert not live.refresh()  # nothing new
    save_checkpoint(paths.stage2_dir, create_model(ModelParams(), seed=1))
    data = DataParams(root=str(tiny_catalogue))
    version = index.run(Params(data=data, gallery=GalleryParams(root=data.root)), paths)["version"]
    assert version != old.version
    assert live.refresh() and live.version == version and live.swaps == 1
    assert live.current.model is not old.model and live.current.description["model"] != old.description["model"]
    assert live.current.search(None, "a red dress", 5).version == version
    with caplog.at_level(logging.WARNING, logger="fashion_cir.index"):
        assert not pinned.refresh() and not pinned.refresh()
    said = [r.getMessage() for r in caplog.records if r.name == "fashion_cir.index"]
    assert len(said) == 1 and "another model" in said[0] and pinned.version == old.version
    assert pinned.current.search(None, "a red dress", 5).hits
