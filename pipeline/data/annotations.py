"""Reading a benchmark's annotation JSON with one-sentence errors that name the file and the expected layout."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import PipelineError


def load_annotation(path: Path, layout: str, needed_because: str) -> object:
    """The parsed JSON at `path`; a missing or unreadable file stops with one sentence naming it."""
    if not path.is_file():
        raise PipelineError(f"{path} is missing; {needed_because}, so the layout needs this file ({layout}).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
