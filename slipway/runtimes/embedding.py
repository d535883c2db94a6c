"""The `embedding` runtime: a sentence-transformers folder served as OpenAI `/v1/embeddings`.

Texts from concurrent requests are coalesced by a `MicroBatcher` into batches of at most
`runtime.max_batch_size` and encoded on one worker thread, so the event loop stays free. Within a
request, texts are queued longest first so each batch pads to similar lengths.
`usage.prompt_tokens` is the number of tokens the model really read (after truncation).
`encoding_format: base64` returns little-endian float32 bytes, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from slipway.errors import RuntimeLoadError
from slipway.runtimes.base import BadRequestError, Runtime, bad_request_from_validation
from slipway.runtimes.batching import MicroBatcher
from slipway.runtimes.sentence_encoder import SentenceEncoder
from slipway.runtimes.weights import resolve_weights
from slipway.spec.openai import EmbeddingItem, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage
from slipway.spec.package import PackageSpec

# OpenAI's own limit on inputs per request.
MAX_INPUTS_PER_REQUEST = 2048
# Texts waiting for the model, across all requests, before callers are made to wait.
MAX_QUEUED_INPUTS = 8 * MAX_INPUTS_PER_REQUEST


class EmbeddingRuntime(Runtime):
    """Encodes text with the package's sentence-transformers weights."""

    kind = "embedding"

    def __init__(self, spec: PackageSpec, package_dir: Path) -> None:
        self.spec = spec
        self.package_dir = Path(package_dir)
        self.encoder: SentenceEncoder | None = None
        # One inference at a time: torch spreads each batch over its own threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._batcher: MicroBatcher[str, tuple[Any, int]] | None = None
        self._tokens_total = 0

    async def load(self) -> None:
        assert self.spec.weights is not None  # the spec requires weights for kind embedding
        folder = resolve_weights(self.spec.weights, self.package_dir)
        loop = asyncio.get_running_loop()
        self.encoder = await loop.run_in_executor(
            self._executor, lambda: SentenceEncoder.load(folder, threads=torch_threads(self.spec.resources.cpu))
        )
        self._batcher = MicroBatcher(self._encode_batch, max_batch_size=self.spec.runtime.max_batch_size,
                                     max_queued=MAX_QUEUED_INPUTS, executor=self._executor)

    def _encode_batch(self, texts: list[str]) -> list[tuple[Any, int]]:
        assert self.encoder is not None
        vectors, token_counts = self.encoder.encode(texts)
        rows = vectors.numpy()
        return [(rows[i], token_counts[i]) for i in range(len(texts))]

    async def embeddings(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        if self.encoder is None or self._batcher is None:
            raise RuntimeLoadError("the model is not loaded yet; wait for GET /health/ready to answer 200")
        texts = self._texts(request)
        if request.dimensions is not None and request.dimensions != self.encoder.dimension:
            raise BadRequestError(
                f"dimensions={request.dimensions} is not available: this model returns "
                f"{self.encoder.dimension}-dimensional embeddings; omit 'dimensions' or set it to {self.encoder.dimension}",
                param="dimensions",
            )
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        encoded = await self._batcher.submit([texts[i] for i in order])
        results: list[Any] = [None] * len(texts)
        for position, index in enumerate(order):
            results[index] = encoded[position]
        prompt_tokens = sum(count for _, count in results)
        self._tokens_total += prompt_tokens
        as_base64 = request.encoding_format == "base64"
        data = [
            EmbeddingItem.model_construct(
                object="embedding", index=i,
                embedding=base64.b64encode(vector.astype("<f4").tobytes()).decode() if as_base64 else vector.tolist(),
            )
            for i, (vector, _) in enumerate(results)
        ]
        return EmbeddingsResponse.model_construct(
            object="list", data=data, model=request.model,
            usage=EmbeddingsUsage.model_construct(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
        )

    @staticmethod
    def _texts(request: EmbeddingsRequest) -> list[str]:
        value = request.input
        texts = [value] if isinstance(value, str) else list(value)
        if not texts:
            raise BadRequestError("'input' is an empty list; send a string or a non-empty list of strings",
                                  param="input")
        if not all(isinstance(text, str) for text in texts):
            raise BadRequestError(
                "'input' holds token ids; this model takes text: send a string or a list of strings",
                param="input", code="unsupported_input",
            )
        if len(texts) > MAX_INPUTS_PER_REQUEST:
            raise BadRequestError(
                f"'input' has {len(texts)} items; at most {MAX_INPUTS_PER_REQUEST} per request, split it up",
                param="input",
            )
        return texts

    async def predict(self, body: Any) -> Any:
        """`{"input": ...}` (other EmbeddingsRequest fields optional) -> the embeddings response."""
        if not isinstance(body, dict) or "input" not in body:
            raise BadRequestError(
                'an embedding model predicts from {"input": "text" or ["text", ...]}; add "input"',
                param="input",
            )
        try:
            request = EmbeddingsRequest.model_validate({"model": self.spec.name, **body})
        except ValidationError as exc:
            raise bad_request_from_validation(exc) from None
        return (await self.embeddings(request)).model_dump()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"running": 0, "waiting": 0}
        if self._batcher is not None:
            stats.update(self._batcher.stats())
        stats["prompt_tokens_total"] = self._tokens_total
        if self.encoder is not None:
            stats["dimension"] = self.encoder.dimension
        return stats

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


def torch_threads(cpu: float) -> int | None:
    """Threads for torch: the replica's CPU share, at most the machine's cores.

    An explicit OMP_NUM_THREADS wins (returns None: leave torch as configured).
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, min(os.cpu_count() or 1, math.ceil(cpu)))
