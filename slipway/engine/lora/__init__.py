"""Many LoRA adapters of one base model, served together: each request picks one (or none),
and one batch mixes them.

    adapter.py  a PEFT folder: read, checked against the base, mapped onto the fused layers
    table.py    LoraTable: registered name -> folder; loaded weights in max_loras LRU slots
    stack.py    LoraStack: the loaded adapters' weights stacked per layer
    batch.py    LoraBatch: one step's per-row products, added to the base layers' outputs
    merge.py    merge_lora: fold an adapter into the base weights (a merged deployment)

    engine.add_lora(name, folder) ─► table.register
    add_request(..., lora_name)   ─► Sequence.lora ─► scheduler: table.acquire (load, evict LRU)
    step ─► runner: spans of rows per slot ─► LoraBatch(table.stack(), spans)
         ─► model: y = base(x); y = lora.apply(layer, x, y)   (no LoraBatch: base path as before)
"""

from slipway.engine.lora.adapter import LoraAdapter, LoraAdapterError, inspect_adapter, load_fused_weights
from slipway.engine.lora.batch import LayerLora, LoraBatch
from slipway.engine.lora.merge import merge_lora
from slipway.engine.lora.stack import LoraStack
from slipway.engine.lora.table import LoraTable

__all__ = ["LayerLora", "LoraAdapter", "LoraAdapterError", "LoraBatch", "LoraStack", "LoraTable",
           "inspect_adapter", "load_fused_weights", "merge_lora"]
