"""A served search that follows its index: when the `index` stage writes a new version (index/index.json's
`version`), the server loads it beside the one it serves and swaps it in, without a restart.

Each batch of queries takes the engine once (`LiveEngine.current`) and answers wholly from it, so no answer mixes
two versions; a request in flight while the swap happens finishes on the engine it started with. The new engine is
whole before it is swapped in: its gallery table, its vectors (a new FAISS file, or the other Milvus collection:
pipeline/search/milvus_index.py) and its model (the one being served, when the index was built from it; else the
retrained checkpoint, checked against the index). A version that cannot be loaded (the stage is still writing, the
checkpoint and the index disagree) is said once in the log and tried again at the next poll; the old version is
served meanwhile. The engine swapped out is closed at the next swap, long after its last batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.paths import Paths
from pipeline.search.engine import SearchEngine
from pipeline.search.index import read_description

POLL_SECONDS = 1.0
log = logging.getLogger("fashion_cir.index")


class LiveEngine:
    """The engine a server answers from, replaced by a new one when the index changes."""

    def __init__(self, paths: Paths, engine: SearchEngine, checkpoint: Path | None = None,
                 on_swap: Callable[[SearchEngine], None] | None = None):
        self.paths, self.checkpoint, self.on_swap = paths, checkpoint, on_swap
        self.current, self.since = engine, time.time()
        self.swaps = 0
        self._retired: SearchEngine | None = None
        self._refused = ""  # the version last refused, said once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> str:
        return self.current.version

    def refresh(self) -> bool:
        """Swap in the index on disk if its version is not the one served; whether it swapped."""
        description = read_description(self.paths.index_dir)
        if description is None or description.get("version", "") == self.version:
            return False  # no index (the stage is replacing it) or the same one
        version = str(description.get("version", ""))
        try:
            engine = SearchEngine.open(self.paths, self.checkpoint, serving=self.current, description=description)
        except (PipelineError, OSError, ValueError, KeyError) as error:
            if version != self._refused:
                log.warning("index version %s not served yet (still serving %s): %s", version, self.version, error)
                self._refused = version
            return False
        again = read_description(self.paths.index_dir)
        if again is None or again.get("version") != version:  # rewritten while it loaded: load the newer next time
            engine.close()
            return False
        retired, self._retired = self._retired, self.current
        self.current, self.since, self.swaps, self._refused = engine, time.time(), self.swaps + 1, ""
        if retired is not None:
            retired.close()
        log.info("serving index version %s (%d images) in place of %s", version, len(engine.gallery),
                 self._retired.version)
        if self.on_swap is not None:
            self.on_swap(engine)
        return True

    def follow(self, seconds: float = POLL_SECONDS) -> None:
        """Check for a new index every `seconds`, in a thread, until stop()."""
        def watch() -> None:
            while not self._stop.wait(seconds):
                try:
                    self.refresh()
                except Exception:  # a bug in loading must not stop the following; the old index is served
                    log.exception("following the index failed; still serving version %s", self.version)

        self._thread = threading.Thread(target=watch, name="fashion-cir index follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
