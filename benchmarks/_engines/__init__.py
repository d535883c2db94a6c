"""The parts of benchmarks/engines.py, one concern each.

    workload.py   SmolLM2's files (GGUF and converted folder) and the trace-shaped requests
    servers.py    each engine's OpenAI server on 127.0.0.1: command, readiness, stop
    local_hf.py   Hugging Face transformers `generate`, in-process, timed like a stream
    machine.py    this machine's attainable bf16 matmul FLOP/s and the model's FLOPs per token
    results.py    rows, ratios to builtin, the Markdown table and the JSON file
"""
