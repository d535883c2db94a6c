"""A deterministic stand-in for the gateway's chat routes, for eval runner tests (raw ASGI, served by uvicorn).

    POST /v1/chat/completions           answers as the model named by `model` behaves
    POST /deployments/{id}/predict      answers as deployment {id} behaves (the same chat body)

`behaviour[target]` is "right" (the answer in ANSWERS to the last user message), "wrong" (always
"I do not know"), "half" (right for even numbers only) or "down" (503 in the OpenAI error shape).
Requests made are recorded as (path, body); `keys` are the secrets accepted (others get 401).
"""

from __future__ import annotations

import re

import orjson

ANSWERS = {f"What is {i} plus {i}?": str(2 * i) for i in range(20)}


def items(n: int) -> list[dict]:
    return [{"input": f"What is {i} plus {i}?", "ideal": str(2 * i)} for i in range(n)]


def completion(text: str, model: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class ModelServer:
    def __init__(self, behaviour: dict[str, str], keys: tuple[str, ...] = ("sk-test",)) -> None:
        self.behaviour, self.keys = behaviour, keys
        self.requests: list[tuple[str, dict]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body or b"{}")
        path = scope["path"]
        self.requests.append((path, request))
        headers = dict(scope["headers"])
        secret = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
        if secret not in self.keys:
            return await self._send(send, 401, {"error": {"message": "bad key", "type": "authentication_error",
                                                          "param": None, "code": "invalid_api_key"}})
        match = re.fullmatch(r"/deployments/([^/]+)/predict", path)
        target = match.group(1) if match else request.get("model") if path == "/v1/chat/completions" else None
        if target not in self.behaviour:
            return await self._send(send, 404, {"error": {"message": f"no {target}", "type": "invalid_request_error",
                                                          "param": "model", "code": "not_found"}})
        mode = self.behaviour[target]
        if mode == "down":
            return await self._send(send, 503, {"error": {"message": "no replica", "type": "server_error",
                                                          "param": None, "code": "unavailable"}})
        question = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
        right = ANSWERS.get(question, "?")
        answer = {"right": right, "wrong": "I do not know",
                  "half": right if int(right) % 4 == 0 else "I do not know"}[mode]
        await self._send(send, 200, completion(answer, target))

    @staticmethod
    async def _send(send, status: int, body: dict) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": orjson.dumps(body)})
