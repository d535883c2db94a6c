"""Model code for the built-in engine.

    config.py     ModelConfig: a checkpoint's shape, read from config.json
    layers.py     RMSNorm, rotary embeddings (default, linear, llama3)
    attention.py  attention over the paged KV cache for a flat mixed batch
    llama.py      the Llama family (Llama 2/3, SmolLM2, Mistral, Qwen2)
    loader.py     safetensors folder -> model on a device in a dtype
"""

from slipway.engine.models.attention import AttentionMetadata, BatchedQueries, PrefillSpan
from slipway.engine.models.config import ModelConfig
from slipway.engine.models.llama import LlamaForCausalLM
from slipway.engine.models.loader import load_model

__all__ = ["AttentionMetadata", "BatchedQueries", "LlamaForCausalLM", "ModelConfig", "PrefillSpan", "load_model"]
