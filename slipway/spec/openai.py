"""OpenAI wire shapes that slipway speaks: errors, models, embeddings, chat and text completion requests,
and how a chat or completion prompt becomes token ids (the one rendering replicas and gateways share)."""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from slipway.errors import SpecError


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingsUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "slipway"


# -- chat and text completions (requests) ------------------------------------------------------
#
# Unknown top-level fields are ignored, as OpenAI-compatible servers do; fields that OpenAI defines
# but a text model server cannot honour (tools, logit_bias, ...) are refused by the runtime with a
# message naming them, so a client never gets a silently different answer.

MAX_CHOICES = 16
"""Most completions one request may ask for (`n`), per prompt."""
MAX_LOGPROBS = 20
"""Most alternatives per token (`top_logprobs` of chat, `logprobs` of completions)."""
MAX_PROMPTS = 16
"""Most prompts in one /v1/completions request."""
ChatRole = Literal["system", "developer", "user", "assistant"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = Field(False, description="Send a last chunk with empty choices and the request's usage.")


class ChatMessage(BaseModel):
    """One message of a conversation; content parts are joined into one text (type text only)."""

    model_config = ConfigDict(extra="ignore")

    role: ChatRole = Field(description="Who speaks: system (or developer), user, or assistant.")
    content: str | None = Field(None, description="The text; a list of {type: text, text} parts is joined by newlines.")
    name: str | None = Field(None, description="Optional speaker name, passed to the chat template.")

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        texts = []
        for index, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text" or not isinstance(part.get("text"), str):
                raise ValueError(
                    f"content part {index} has type {kind!r}; this model reads text only: send "
                    "parts like {\"type\": \"text\", \"text\": \"...\"} or a plain string"
                )
            texts.append(part["text"])
        return "\n".join(texts)

    @model_validator(mode="after")
    def _content_present(self) -> "ChatMessage":
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs 'content' (a string or a list of text parts)")
        return self


class _TextGenerationRequest(BaseModel):
    """Fields chat and text completions share: sampling, stopping and streaming."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field("", description="The model to call (the gateway routes on it).")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="Completions to generate per prompt.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int | None = Field(None, ge=-1, description="Keep the k most likely tokens; 0 or -1 keeps all (extra).")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="Drop tokens below min_p x the top one (extra).")
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1, description="Same seed and parameters, same output.")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Penalty on tokens already generated.")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Penalty per repetition of a token.")
    stop: str | list[str] | None = Field(None, description="Strings that end a completion (left out of its text).")
    stop_token_ids: list[int] | None = Field(None, description="Token ids that end a completion (extra).")
    ignore_eos: bool = Field(False, description="Keep generating past end-of-sequence tokens (extra).")
    min_tokens: int = Field(0, ge=0, description="Tokens to generate before an end or a stop may end a completion (extra).")
    skip_special_tokens: bool = Field(True, description="Leave special tokens out of the text (extra).")
    stream: bool = Field(False, description="Answer with server-sent events, chunk by chunk.")
    stream_options: StreamOptions | None = Field(None, description="Streaming options; only with stream: true.")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported; must be empty.")
    user: str | None = Field(None, description="End-user id; accepted and ignored.")

    @field_validator("stream_options")
    @classmethod
    def _stream_options_need_stream(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed with stream: true; remove it or set stream: true")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_TextGenerationRequest):
    """Body of `POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far, oldest first.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (wins over max_tokens).")
    logprobs: bool = Field(False, description="Return the log-probability of each generated token.")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="Alternatives per token; needs logprobs.")
    tools: list[Any] | None = Field(None, description="Not supported; must be empty.")
    tool_choice: Any = Field(None, description="Only 'none' or 'auto' without tools.")
    response_format: dict[str, Any] | None = Field(None, description="Only {\"type\": \"text\"}.")

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true; set it, or remove top_logprobs")
        return value

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_TextGenerationRequest):
    """Body of `POST /v1/completions`."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, a list of token ids, or a list of token id lists."
    )
    max_tokens: int | None = Field(16, ge=1, description="Most tokens to generate (OpenAI's default is 16).")
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="Return this many alternatives per token.")
    echo: bool = Field(False, description="Put the prompt before the completion in `text`.")
    suffix: str | None = Field(None, description="Not supported; must be empty.")
    best_of: int | None = Field(None, ge=1, description="Only equal to n (no server-side ranking).")


CompletionPrompt = str | list[str] | list[int] | list[list[int]]
"""What `prompt` of a completion request may be (`CompletionRequest.prompt`)."""


# -- prompt token ids --------------------------------------------------------------------------
#
# One rendering of a prompt into token ids for both sides of the KV-cache contract: a replica's
# llm runtime feeds these ids to its engine, and a gateway routing by KV blocks (kv_aware) hashes
# the ids it gets from the same functions over the same tokenizer files, so the blocks it looks
# for are the blocks the replica caches. `tokenizer` is a Hugging Face tokenizer, used only
# through `chat_template`, `apply_chat_template` and calling it; nothing here imports one.


class PromptError(SpecError):
    """A prompt that cannot become token ids (400); `param` names the field to change."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


def chat_template_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The messages as a chat template reads them: `developer` speaks as `system`, no content is ""."""
    rendered = []
    for message in messages:
        entry: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                                 "content": message.content or ""}
        if message.name:
            entry["name"] = message.name
        rendered.append(entry)
    return rendered


def chat_prompt_token_ids(tokenizer: Any, messages: Sequence[ChatMessage]) -> list[int]:
    """The conversation through the model's chat template, the assistant's turn opened, as token ids."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise PromptError("this model has no chat template; call /v1/completions with a prompt instead",
                          param="messages")
    try:
        text = tokenizer.apply_chat_template(chat_template_messages(messages), add_generation_prompt=True,
                                             tokenize=False)
    except Exception as exc:  # noqa: BLE001 - templates raise their own errors (e.g. roles must alternate)
        raise PromptError(f"the model's chat template refused these messages: {exc}; change the messages "
                          "to the order and roles this model expects", param="messages") from None
    # The template wrote the special tokens (BOS included) itself; adding them again would double them.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def completion_prompts(prompt: CompletionPrompt) -> list[str | list[int]]:
    """Each prompt of a completion request: one text, one token id list, or a batch of either."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(item, int) for item in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def completion_prompt_token_ids(tokenizer: Any, prompt: str | list[int]) -> list[int]:
    """One completion prompt as token ids: a text tokenized with the model's special tokens, ids as sent."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    return list(prompt)
