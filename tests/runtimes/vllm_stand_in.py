"""A stand-in for vLLM's OpenAI server, for tests that run without vLLM installed.

Installed by the tests as `vllm/entrypoints/openai/api_server.py` on the child's PYTHONPATH, so
`<python> -m vllm.entrypoints.openai.api_server --model ... --port ...` starts this instead. It
speaks the parts of vLLM's protocol the runtime uses: /health, /metrics (vLLM's series names),
chat and text completions (JSON and SSE, ending in `data: [DONE]`), and vLLM's error bodies.

Behaviour switches, from the environment:
    STAND_IN_RECORD=<file>     write {"argv", "env", "pid", "grandchild_pid"} there at start
    STAND_IN_EXIT_CODE=<n>     exit at once with that code
    STAND_IN_NEVER_READY=1     /health answers 503 forever
    STAND_IN_GRANDCHILD=1      start a sleeping grandchild (it must die with the process group)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

if os.environ.get("STAND_IN_EXIT_CODE"):
    print("stand-in vllm: exiting as asked", file=sys.stderr, flush=True)
    sys.exit(int(os.environ["STAND_IN_EXIT_CODE"]))

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--host", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--served-model-name", required=True)
args, _ = parser.parse_known_args()

WORDS = ["Hello", " from", " the", " stand-in"]
counters = {"prompt": 0, "generation": 0, "running": 0}

grandchild = None
if os.environ.get("STAND_IN_GRANDCHILD"):
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
if os.environ.get("STAND_IN_RECORD"):
    with open(os.environ["STAND_IN_RECORD"], "w") as record:
        json.dump({"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid(),
                   "grandchild_pid": grandchild.pid if grandchild else None}, record)


def vllm_error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


async def health(request: Request):
    if os.environ.get("STAND_IN_NEVER_READY"):
        return PlainTextResponse("loading", 503)
    return PlainTextResponse("")


async def metrics(request: Request):
    labels = f'engine="0",model_name="{args.served_model_name}"'
    return PlainTextResponse(
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running{{{labels}}} {float(counters['running'])}\n"
        f"vllm:num_requests_waiting{{{labels}}} 2.0\n"
        f"vllm:kv_cache_usage_perc{{{labels}}} 0.25\n"
        f"vllm:prompt_tokens_total{{{labels}}} {float(counters['prompt'])}\n"
        f"vllm:generation_tokens_total{{{labels}}} {float(counters['generation'])}\n"
        f"vllm:prefix_cache_queries_total{{{labels}}} {float(counters['prompt'])}\n"
        f"vllm:prefix_cache_hits_total{{{labels}}} 0.0\n"
    )


async def completion(request: Request):
    body = await request.json()
    chat = request.url.path.endswith("/chat/completions")
    if body.get("model") != args.served_model_name:
        return vllm_error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")
    if body.get("max_tokens", 1) < 1:
        return vllm_error(400, f"max_tokens must be at least 1, got {body['max_tokens']}.", "BadRequestError",
                          "max_tokens")
    counters["prompt"] += 5
    counters["generation"] += len(WORDS)
    created = int(time.time())
    kind = "chat.completion" if chat else "text_completion"
    if not body.get("stream"):
        text = "".join(WORDS)
        choice = {"index": 0, "finish_reason": "stop",
                  **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
        return JSONResponse({"id": "cmpl-stand-in", "object": kind, "created": created, "model": body["model"],
                             "choices": [choice],
                             "usage": {"prompt_tokens": 5, "completion_tokens": len(WORDS), "total_tokens": 9}})

    async def events():
        for number, word in enumerate(WORDS):
            last = number == len(WORDS) - 1
            delta = {"delta": {"content": word}} if chat else {"text": word}
            chunk = {"id": "cmpl-stand-in", "object": kind + ".chunk" if chat else kind, "created": created,
                     "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop" if last else None, **delta}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            await asyncio.sleep(0.01)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


app = Starlette(routes=[
    Route("/health", health), Route("/metrics", metrics),
    Route("/v1/chat/completions", completion, methods=["POST"]),
    Route("/v1/completions", completion, methods=["POST"]),
])

if __name__ == "__main__":
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
