"""A served search that follows its index: when the `index` stage writes a new version (index/index.json's
`version`), the server loads it beside the one it serves and swaps it in, without a restart.

Each batch of queries takes the engine once (`LiveEngine.current`) and answers wholly from it, so no answer mixes
two versions; a request in flight while the swap happens finishes on the engine it started with. The new engine is
whole before it is swapped in: its gallery table, its vectors (a new FAISS file, or the other Milvus collection:
pipeline/search/milvus_index.py) and its model (the one being served, when the index was built from it; else the
retrained checkpoint, checked against the index). A version that cannot be loaded (the stage is still writing, the
checkpoint and the index disagree) is said once in the log and tried again at the next poll; the old version is
served meanwhile. The engine swapped out is closed and let go RETIRE_SECONDS later, long after its last batch: the
server holds two galleries' vectors for that long after a swap, one otherwise.
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
RETIRE_SECONDS = 30.0  # how long an engine swapped out is kept for the batches that may still be on it
log = logging.getLogger("fashion_cir.index")


class LiveEngine:
    """The engine a server answers from, replaced by a new one when the index changes."""

    def __init__(self, paths: Paths, engine: SearchEngine, checkpoint: Path | None = None,
                 on_swap: Callable[[SearchEngine], None] | None = None):
        self.paths, self.checkpoint, self.on_swap = paths, checkpoint, on_swap
        self.current, self.since = engine, time.time()
        self.swaps = 0
        self._retired: SearchEngine | None = None
        self._retired_at = 0.0
        self._refused = ""  # the version last refused, said once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> str:
        return self.current.version

    def refresh(self) -> bool:
        """Swap in the index on disk if its version is not the one served; whether it swapped."""
        self._let_go(RETIRE_SECONDS)
        description = read_description(self.paths.index_dir)
        if description is None or description.get("version", "") == self.version:
            return False  # no index (the stage is replacing it) or the same one
        version = str(description.get("version", ""))
        self._let_go(0)  # at most two versions in memory: the one served and the one loading
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
        old, self._retired, self._retired_at = self.current, self.current, time.time()
        self.current, self.since, self.swaps, self._refused = engine, time.time(), self.swaps + 1, ""
        log.info("serving index version %s (%d images) in place of %s", version, len(engine.gallery), old.version)
        if self.on_swap is not None:
            self.on_swap(engine)
        return True

    def _let_go(self, after: float) -> None:
        """Close the engine swapped out, once it has been out for `after` seconds."""
        if self._retired is not None and time.time() - self._retired_at >= after:
            self._retired.close()
            self._retired = None

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
