"""Talking to a vLLM OpenAI-compatible server: `ChatClient` (many requests in flight) and the `vllm` backend.

One `AsyncOpenAI` client per server on one event loop for the whole run; a semaphore bounds the requests in flight
(`caption.max_concurrency` per server). `caption.url` may list several servers (one per GPU or per machine, each
its own `vllm serve`): every request goes to the server with the fewest in flight, so a faster server takes more of
the work and a slow one never holds the batch back by more than its own requests. JSON schemas go as
`response_format` json_schema, so vLLM's grammar keeps answers inside the schema's vocabularies. A server the
stage starts itself is started lazily, on the first request: a fully cached re-run never loads the model.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import openai

from pipeline.captioning.mllm import Decoding, Generation, MLLMCaptioner, chat_messages
from pipeline.captioning.vllm_server import check_serves, launch, server_version
from pipeline.config import CaptionParams
from pipeline.errors import PipelineError

REQUEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]
    schema: dict
    decoding: Decoding


def server_urls(url: str | list[str]) -> list[str]:
    """`caption.url` as a list of server URLs ([] = start one)."""
    return [u.rstrip("/") for u in ([url] if isinstance(url, str) else url) if u]


class ChatClient:
    """Chat completions against the servers `caption.url` lists, or against one it starts from
    `caption.serve_command`; each request to the server with the fewest requests in flight."""

    def __init__(self, params: CaptionParams, model: str, log_path: Path | None = None):
        self.params, self.model = params, model
        self._log_path = log_path
        self._servers = ExitStack()
        self._loop = asyncio.new_event_loop()
        self._clients: list[openai.AsyncOpenAI] = []
        self._semaphore: asyncio.Semaphore | None = None
        self.urls: list[str] = []
        self.in_flight: list[int] = []
        self.answered: list[int] = []  # requests each server answered, for the stage report
        self.versions: dict[str, str] = {}

    @property
    def url(self) -> str:
        return ", ".join(self.urls)

    def _connect(self) -> None:
        if self._clients:
            return
        p = self.params
        self.urls = server_urls(p.url)
        for url in self.urls:
            check_serves(url, self.model)
        if not self.urls:
            self.urls = [self._servers.enter_context(launch(p, self.model, self._log_path)).url]
        self.versions = {"vllm": server_version(self.urls[0])}
        self._clients = [openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="EMPTY", timeout=REQUEST_TIMEOUT_S,
                                            max_retries=2) for url in self.urls]
        self.in_flight, self.answered = [0] * len(self.urls), [0] * len(self.urls)
        self._semaphore = asyncio.Semaphore(p.max_concurrency * len(self.urls))

    def complete(self, requests: list[ChatRequest]) -> list[Generation]:
        """One answer per request, in order; at most `max_concurrency` in flight."""
        self._connect()
        return self._loop.run_until_complete(self._all(requests))

    async def _all(self, requests: list[ChatRequest]) -> list[Generation]:
        return list(await asyncio.gather(*(self._request(r) for r in requests)))

    async def _request(self, request: ChatRequest) -> Generation:
        assert self._clients and self._semaphore is not None
        decoding = request.decoding
        async with self._semaphore:
            server = min(range(len(self._clients)), key=lambda i: (self.in_flight[i], self.answered[i]))
            self.in_flight[server] += 1
            try:
                response = await self._clients[server].chat.completions.create(
                    model=self.model, messages=request.messages,  # type: ignore[arg-type]
                    max_tokens=decoding.max_tokens, temperature=decoding.temperature, seed=decoding.seed,
                    response_format={"type": "json_schema",
                                     "json_schema": {"name": "answer", "schema": request.schema, "strict": True}})
            except openai.APIConnectionError as error:
                raise PipelineError(f"lost the vLLM server at {self.urls[server]} ({error}); the work finished so "
                                    f"far is kept, re-run the stage to resume.") from None
            except openai.BadRequestError as error:  # this one request was refused: not fatal
                return Generation(text="", error=f"refused by the server: {error.message}")
            finally:
                self.in_flight[server] -= 1
            self.answered[server] += 1
        choice = response.choices[0]
        usage = response.usage
        return Generation(text=choice.message.content or "", finish_reason=choice.finish_reason or "stop",
                          prompt_tokens=usage.prompt_tokens if usage else 0,
                          completion_tokens=usage.completion_tokens if usage else 0)

    def close(self) -> None:
        for client in self._clients:
            self._loop.run_until_complete(client.close())
        self._clients = []
        self._loop.close()
        self._servers.close()


class VLLMServerCaptioner(MLLMCaptioner):
    backend = "vllm"

    def __init__(self, params: CaptionParams, log_path: Path | None = None):
        super().__init__(params)
        self.client = ChatClient(params, params.model, log_path)

    @property
    def url(self) -> str:
        return self.client.url

    def versions(self) -> dict[str, str]:
        return self.client.versions

    def generate(self, images: list[bytes], decodings: list[Decoding]) -> list[Generation]:
        return self.client.complete([ChatRequest(chat_messages(image, self.params.free_text), self.schema, decoding)
                                     for image, decoding in zip(images, decodings, strict=True)])

    def close(self) -> None:
        self.client.close()
