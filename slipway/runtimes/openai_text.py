"""OpenAI chat and text completion requests -> what the built-in engine runs.

    body ─► parse_chat_request / parse_completion_request   pydantic shapes; 400 naming the parameter
         ─► refuse fields the server cannot honour           tools, logit_bias, suffix, best_of != n
         ─► chat_prompt_ids / completion_prompt_ids          token ids (chat template, tokenizer, or as sent),
                                                             rendered by spec.openai as a kv_aware gateway does
         ─► plan_generation                                  SamplingParams, max_tokens checked against
                                                             max_model_len with both numbers named

Everything here is synchronous; tokenizing is CPU work, so the runtime calls the `*_prompt_ids`
functions from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from pydantic import ValidationError

from slipway.engine import SamplingParams
from slipway.runtimes.base import BadRequestError
from slipway.spec.openai import (
    MAX_CHOICES, MAX_PROMPTS, ChatCompletionRequest, CompletionRequest, PromptError, chat_prompt_token_ids,
    completion_prompt_token_ids, completion_prompts,
)

Route = Literal["chat", "completion"]

# Prompts x n of one request: each completion is a sequence in the engine's batch.
MAX_COMPLETIONS_PER_REQUEST = 64

# A hint per parameter, appended to pydantic's own message so a 400 says what to change.
_HINTS = {
    "max_tokens": "set it to 1 or more, or leave it out",
    "max_completion_tokens": "set it to 1 or more, or leave it out",
    "n": f"ask for 1 to {MAX_CHOICES} completions",
    "temperature": "use a value from 0 (greedy) to 2",
    "top_p": "use a value above 0 and at most 1",
    "top_k": "use 0 or -1 (all tokens) or a positive count",
    "min_p": "use a value from 0 to 1",
    "presence_penalty": "use a value from -2 to 2",
    "frequency_penalty": "use a value from -2 to 2",
    "top_logprobs": "use 0 to 20",
    "logprobs": "use 0 to 20 (completions) or true/false (chat)",
    "messages": "send a non-empty list of {\"role\": ..., \"content\": ...} objects",
    "prompt": "send a string, a list of strings, a list of token ids, or a list of token id lists",
}


@dataclass(frozen=True)
class GenerationPlan:
    """One validated request, ready for the engine: every prompt runs with the same params."""

    route: Route
    prompts: list[list[int]]
    params: SamplingParams
    stream: bool
    include_usage: bool
    logprobs: bool
    """Whether the answer carries log-probabilities (chat `logprobs`, completions `logprobs` set)."""
    echo_texts: list[str] | None = None
    """Completions with echo: each prompt's text, put before its completions."""

    @property
    def num_choices(self) -> int:
        return len(self.prompts) * self.params.n


# -- parsing ---------------------------------------------------------------------------------


def parse_chat_request(body: dict[str, Any]) -> ChatCompletionRequest:
    request = _validate(ChatCompletionRequest, body)
    if request.tools:
        raise BadRequestError("tools are not supported by this model server; remove 'tools'", param="tools")
    if request.tool_choice not in (None, "none", "auto"):
        raise BadRequestError("tool_choice needs tools, which this model server does not support; remove it",
                              param="tool_choice")
    if request.response_format not in (None, {"type": "text"}):
        raise BadRequestError("only response_format {\"type\": \"text\"} is supported; remove response_format",
                              param="response_format")
    _refuse_logit_bias(request.logit_bias)
    return request


def parse_completion_request(body: dict[str, Any]) -> CompletionRequest:
    request = _validate(CompletionRequest, body)
    if request.suffix:
        raise BadRequestError("suffix (fill-in-the-middle) is not supported; remove 'suffix'", param="suffix")
    if request.best_of is not None and request.best_of != request.n:
        raise BadRequestError(
            f"best_of={request.best_of} with n={request.n}: this server returns every completion it generates; "
            "remove best_of or set it equal to n", param="best_of",
        )
    if request.echo and request.logprobs is not None:
        raise BadRequestError("echo with logprobs would need the prompt's log-probabilities, which are not "
                              "computed; drop one of them", param="echo")
    _refuse_logit_bias(request.logit_bias)
    return request


def _refuse_logit_bias(logit_bias: dict[str, float] | None) -> None:
    if logit_bias:
        raise BadRequestError("logit_bias is not supported; remove it", param="logit_bias")


def _validate(model: type[ChatCompletionRequest] | type[CompletionRequest], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise bad_request(exc) from None


def bad_request(exc: ValidationError) -> BadRequestError:
    """One 400 for a rejected body: each problem names its parameter (`messages[0].role`) and the fix."""
    problems: list[str] = []
    params: list[str] = []
    for error in exc.errors():
        param = _param(error.get("loc", ()))
        if param in params and param in ("prompt", "messages"):
            continue  # a union (prompt) or list reports one problem several ways; one line is enough
        params.append(param)
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = "required, but missing"
        hint = _HINTS.get(param)
        got = f" (got {error['input']!r})" if error.get("type") not in ("missing", "value_error") and \
            _short(error.get("input")) else ""
        problems.append(f"{param}: {message}{got}" + (f"; {hint}" if hint else ""))
    return BadRequestError("invalid request: " + "; ".join(problems), param=params[0] if params else None)


def _param(loc: Sequence[Any]) -> str:
    """('messages', 0, 'role') -> 'messages[0].role'; union branch names of `prompt` are dropped."""
    if loc and loc[0] == "prompt":
        return "prompt"
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def _short(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) and len(repr(value)) <= 80


# -- prompts ---------------------------------------------------------------------------------


def chat_prompt_ids(tokenizer: Any, request: ChatCompletionRequest) -> list[int]:
    """The conversation through the model's chat template, with the assistant's turn opened.

    The rendering is `spec.openai.chat_prompt_token_ids`, the one a kv_aware gateway runs too."""
    try:
        return chat_prompt_token_ids(tokenizer, request.messages)
    except PromptError as exc:
        raise BadRequestError(exc.message, param=exc.param) from None


def completion_prompt_ids(tokenizer: Any, request: CompletionRequest, vocab_size: int) -> list[list[int]]:
    """Each prompt of a completion request as token ids: texts tokenized, token ids checked."""
    prompts = completion_prompts(request.prompt)
    if not prompts:
        raise BadRequestError("prompt is an empty list; send at least one prompt", param="prompt")
    if len(prompts) > MAX_PROMPTS:
        raise BadRequestError(f"prompt holds {len(prompts)} prompts; send at most {MAX_PROMPTS} per request",
                              param="prompt")
    result = []
    for index, item in enumerate(prompts):
        ids = completion_prompt_token_ids(tokenizer, item)
        where = "prompt" if len(prompts) == 1 else f"prompt[{index}]"
        if not ids:
            raise BadRequestError(f"{where} is empty; send some text or token ids", param="prompt")
        if min(ids) < 0 or max(ids) >= vocab_size:
            raise BadRequestError(f"{where} holds token ids outside [0, {vocab_size}); use this model's tokenizer",
                                  param="prompt")
        result.append(ids)
    return result


# -- sampling --------------------------------------------------------------------------------


def plan_generation(route: Route, request: ChatCompletionRequest | CompletionRequest, prompts: list[list[int]],
                    max_model_len: int, *, echo_texts: list[str] | None = None) -> GenerationPlan:
    """Check every prompt fits with its completion in `max_model_len`, and build the SamplingParams."""
    if isinstance(request, ChatCompletionRequest):
        limit, limit_param = request.completion_limit, (
            "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens")
        num_logprobs = (request.top_logprobs or 0) if request.logprobs else None
    else:
        limit, limit_param, num_logprobs = request.max_tokens, "max_tokens", request.logprobs
    prompt_param = "messages" if route == "chat" else "prompt"
    if limit is not None and request.min_tokens > limit:
        raise BadRequestError(f"min_tokens ({request.min_tokens}) exceeds {limit_param} ({limit}); lower min_tokens "
                              f"or raise {limit_param}", param="min_tokens")
    longest = max(len(ids) for ids in prompts)
    if longest >= max_model_len:
        raise BadRequestError(
            f"the prompt has {longest} tokens but this model's context (max_model_len) is {max_model_len} tokens, "
            f"which leaves no room for a completion; shorten the {prompt_param} to under {max_model_len} tokens",
            param=prompt_param, code="context_length_exceeded",
        )
    if limit is not None and longest + limit > max_model_len:
        raise BadRequestError(
            f"the prompt has {longest} tokens and {limit_param} asks for {limit} more, {longest + limit} in all, "
            f"but this model's context (max_model_len) is {max_model_len} tokens; lower {limit_param} to at most "
            f"{max_model_len - longest}, or shorten the {prompt_param}",
            param=limit_param, code="context_length_exceeded",
        )
    if len(prompts) * request.n > MAX_COMPLETIONS_PER_REQUEST:
        raise BadRequestError(
            f"{len(prompts)} prompts x n={request.n} is {len(prompts) * request.n} completions; ask for at most "
            f"{MAX_COMPLETIONS_PER_REQUEST} per request (fewer prompts or a smaller n)", param="n",
        )
    try:
        params = SamplingParams(
            n=request.n, max_tokens=limit,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=max(request.top_k or 0, 0), min_p=request.min_p or 0.0, seed=request.seed,
            presence_penalty=request.presence_penalty or 0.0, frequency_penalty=request.frequency_penalty or 0.0,
            stop=request.stop, stop_token_ids=tuple(request.stop_token_ids or ()), ignore_eos=request.ignore_eos,
            min_tokens=request.min_tokens,
            logprobs=num_logprobs, skip_special_tokens=request.skip_special_tokens,
        )
    except ValidationError as exc:
        raise bad_request(exc) from None
    return GenerationPlan(route=route, prompts=prompts, params=params, stream=request.stream,
                          include_usage=request.include_usage, logprobs=num_logprobs is not None,
                          echo_texts=echo_texts)
