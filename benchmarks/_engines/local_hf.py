"""Hugging Face transformers as an engine: `generate` in bfloat16, one request at a time, in-process.

There is no server: each request's prompt is tokenized and generated greedily with
min_new_tokens = max_new_tokens, so it yields exactly the trace's output length, like the servers
told to ignore EOS. A streamer stamps the time each new token comes out, which gives TTFT (from
the start of tokenizing) and the gaps between tokens; the results are the same `RequestRecord`s
the HTTP load generator makes, summarized by the same code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from slipway.bench.datasets import BenchRequest
from slipway.bench.record import RequestRecord

_WARMUP_PROMPT = "The quick brown fox jumps over the lazy dog. " * 8
_WARMUP_NEW_TOKENS = 8


class _TokenClock:
    """A transformers streamer that only records when each generated token arrives.

    `generate` hands the streamer the prompt first, then each new token as it is sampled.
    """

    def __init__(self) -> None:
        self.token_times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.token_times.append(time.perf_counter())

    def end(self) -> None:
        pass


class LocalTransformers:
    """SmolLM2 loaded by transformers in bfloat16, generating on `threads` threads."""

    def __init__(self, hf_folder: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its own bar would break the Rich display
        torch.set_num_threads(threads)
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(hf_folder)
        self.model = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.bfloat16).eval()
        self._generate(_WARMUP_PROMPT, _WARMUP_NEW_TOKENS, _TokenClock())

    def run(self, requests: list[BenchRequest], advance: Callable[[], None]) -> tuple[list[RequestRecord], float]:
        """Generate every request in order; returns the records and the run's wall time in seconds."""
        origin = time.perf_counter()
        records = []
        for request in requests:
            records.append(self._one(request, origin))
            advance()
        return records, time.perf_counter() - origin

    def _one(self, request: BenchRequest, origin: float) -> RequestRecord:
        clock = _TokenClock()
        sent_at = time.perf_counter()
        prompt_tokens = self._generate(request.prompt, request.output_tokens, clock)
        ended_at = time.perf_counter()
        times = clock.token_times
        ttft_ms = (times[0] - sent_at) * 1000.0
        e2el_ms = (ended_at - sent_at) * 1000.0
        output_tokens = len(times)
        return RequestRecord(
            index=request.index, success=True, status=200,
            released_ms=(sent_at - origin) * 1000.0, sent_ms=(sent_at - origin) * 1000.0,
            ended_ms=(ended_at - origin) * 1000.0,
            input_tokens=prompt_tokens, output_tokens=output_tokens,
            expected_output_tokens=request.output_tokens, usage_reported=True,
            ttft_ms=ttft_ms, e2el_ms=e2el_ms,
            tpot_ms=(e2el_ms - ttft_ms) / (output_tokens - 1) if output_tokens > 1 else None,
            itl_ms=[(later - earlier) * 1000.0 for earlier, later in zip(times, times[1:])],
        )

    def _generate(self, prompt: str, new_tokens: int, clock: _TokenClock) -> int:
        """Generate exactly `new_tokens` greedily after `prompt`; returns the prompt's token count."""
        inputs = self.tokenizer(prompt, return_tensors="pt")
        with self._torch.inference_mode():
            self.model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                temperature=None, top_p=None, top_k=None,
                pad_token_id=self.tokenizer.eos_token_id, streamer=clock,
            )
        return int(inputs["input_ids"].shape[1])
