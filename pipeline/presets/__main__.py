"""`python -m pipeline.presets [NAME]`: list the presets, or merge one into params.yaml (see pipeline/presets)."""

import sys

from pipeline.errors import run_stage
from pipeline.presets import main

run_stage(lambda: main(sys.argv[1:]))
