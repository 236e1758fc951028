"""User-facing errors: one sentence, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A problem with the user's input (params, dataset, checkpoint) that one sentence explains."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; a PipelineError ends it with its sentence on stderr and exit status 1."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; finished outputs and caches are kept, re-run to resume.", file=sys.stderr)
        sys.exit(130)
