"""The `vllm-offline` backend: vLLM's in-process engine (`LLM.chat`) for pure batch work, no HTTP.

The same chat request, JSON schema and decoding settings as the `vllm` backend, so the two give the same
captions. `caption.serve_args` are parsed by vLLM's own engine-argument parser, so one set of flags
(`--max-model-len`, `--tensor-parallel-size`, ...) configures either backend.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.captioning.mllm import Decoding, Generation, MLLMCaptioner, chat_messages
from pipeline.config import CaptionParams
from pipeline.errors import PipelineError


def engine_kwargs(model: str, dtype: str, serve_args: list[str]) -> dict[str, Any]:
    """`LLM(**kwargs)` from the same flags `vllm serve` takes, parsed by vLLM's EngineArgs parser."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    namespace = parser.parse_args(["--model", model, "--dtype", dtype, "--limit-mm-per-prompt", '{"image": 1}',
                                   *serve_args])
    args = EngineArgs.from_cli_args(namespace)
    defaults = EngineArgs(model=model)
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(EngineArgs)
            if getattr(args, f.name) != getattr(defaults, f.name) or f.name == "model"}


class VLLMOfflineCaptioner(MLLMCaptioner):
    backend = "vllm-offline"

    def __init__(self, params: CaptionParams):
        super().__init__(params)
        self._llm: Any = None
        self._versions: dict[str, str] = {}

    def _load(self) -> None:
        if self._llm is not None:
            return
        try:
            import vllm
        except ImportError:
            raise PipelineError("caption.backend = 'vllm-offline' needs the vllm package in this Python environment;"
                                " install it, or use caption.backend: vllm with caption.serve_command pointing at an"
                                " environment that has it.") from None
        p = self.params
        self._llm = vllm.LLM(seed=0, **engine_kwargs(p.model, p.dtype, list(p.serve_args)))
        self._versions = {"vllm": vllm.__version__}

    def versions(self) -> dict[str, str]:
        return self._versions

    def generate(self, images: list[bytes], decodings: list[Decoding]) -> list[Generation]:
        self._load()
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sampling = [SamplingParams(max_tokens=d.max_tokens, temperature=d.temperature, seed=d.seed,
                                   structured_outputs=StructuredOutputsParams(json=self.schema))
                    for d in decodings]
        outputs = self._llm.chat([chat_messages(image, self.params.free_text) for image in images],
                                 sampling_params=sampling, use_tqdm=False)
        return [Generation(text=o.outputs[0].text, finish_reason=o.outputs[0].finish_reason or "stop",
                           prompt_tokens=len(o.prompt_token_ids or ()), completion_tokens=len(o.outputs[0].token_ids))
                for o in outputs]

    def close(self) -> None:
        self._llm = None
