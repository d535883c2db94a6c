"""`LoraTable`: the registered adapters and the few whose weights are loaded, in `max_loras` slots.

    register(name, folder)  ── inspect (config + shapes) ──► registered: name -> LoraAdapter
    a request names it      ── the sequence keeps the LoraAdapter itself
    scheduler admits it     ── acquire: loaded? pin it : take a free slot, or evict the least
                               recently used idle adapter, and read its weights ─► pinned
                               no slot (every one pinned by running sequences) ─► it waits
    it finishes, is preempted ─ release: unpinned, stays loaded (LRU) until a slot is needed

The forward reads `stack()`: the loaded adapters stacked per layer (stack.py), rebuilt when the
loaded set changes. An unregistered adapter stays loaded while running sequences use it, and is
dropped once idle.

Threads: the registry (register, unregister, get, names, folders) is safe from any thread, under
a lock; everything about slots and weights belongs to the engine's thread.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from pathlib import Path

import torch

from slipway.engine.lora.adapter import FusedLora, LoraAdapter, LoraAdapterError, inspect_adapter, load_fused_weights
from slipway.engine.lora.stack import LoraStack
from slipway.engine.models.config import ModelConfig


class LoraTable:
    """Registered adapters and their slots; see the module docstring."""

    def __init__(self, model_config: ModelConfig, *, max_loras: int, max_lora_rank: int, dtype: torch.dtype,
                 device: torch.device, pack: bool) -> None:
        """`pack`: lay the stacked weights out for oneDNN (bfloat16 on CPU)."""
        self.model_config = model_config
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.dtype = dtype
        self.device = device
        self.pack = pack
        self._registered: dict[str, LoraAdapter] = {}
        self._lock = threading.Lock()
        # Engine thread only from here on.
        self._slots: list[LoraAdapter | None] = [None] * max_loras
        self._slot_of: dict[LoraAdapter, int] = {}
        self._weights: dict[LoraAdapter, dict[tuple[int, str], FusedLora]] = {}
        self._users: Counter[LoraAdapter] = Counter()
        """Running sequences per loaded adapter: a pinned one is never evicted."""
        self._recency: OrderedDict[LoraAdapter, None] = OrderedDict()
        """Loaded adapters, least recently acquired first."""
        self._stack: LoraStack | None = None

    # -- the registry (any thread) -------------------------------------------------------------

    def register(self, name: str, folder: str | Path) -> LoraAdapter:
        """Check `folder` fits the base and register it as `name`; the same folder again is a no-op.
        Raises `LoraAdapterError` for a bad folder or a name taken by another folder."""
        if not name or not isinstance(name, str):
            raise LoraAdapterError("an adapter needs a non-empty name")
        adapter = inspect_adapter(name, folder, self.model_config, max_lora_rank=self.max_lora_rank)
        with self._lock:
            current = self._registered.get(name)
            if current is not None and current.folder != adapter.folder:
                raise LoraAdapterError(f"an adapter named {name!r} is already registered from {current.folder}; "
                                       "remove it first, or register this folder under another name")
            if current is None or current != adapter:  # a changed file replaces it (new root hash)
                self._registered[name] = adapter
            return self._registered[name]

    def unregister(self, name: str) -> bool:
        """Forget `name`; False if it was not registered. Running sequences keep its weights."""
        with self._lock:
            return self._registered.pop(name, None) is not None

    def get(self, name: str) -> LoraAdapter | None:
        with self._lock:
            return self._registered.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._registered)

    @property
    def num_registered(self) -> int:
        return len(self._registered)

    def folders(self) -> dict[str, Path]:
        """Registered name -> its folder, by name."""
        with self._lock:
            return {name: self._registered[name].folder for name in sorted(self._registered)}

    # -- slots (engine thread) -----------------------------------------------------------------

    @property
    def num_loaded(self) -> int:
        return len(self._slot_of)

    def is_loaded(self, adapter: LoraAdapter) -> bool:
        return adapter in self._slot_of

    def slot_of(self, adapter: LoraAdapter) -> int:
        """The slot of a loaded adapter (acquired by a running sequence)."""
        return self._slot_of[adapter]

    def acquire(self, adapter: LoraAdapter) -> bool:
        """Pin `adapter` for one running sequence, loading it into a slot if needed; False when
        every slot holds a pinned adapter. Raises `LoraAdapterError` if its file no longer reads."""
        if adapter not in self._slot_of:
            slot = self._free_slot()
            if slot is None:
                return False
            self._weights[adapter] = load_fused_weights(adapter, self.model_config, dtype=self.dtype,
                                                        device=self.device)
            self._slots[slot] = adapter
            self._slot_of[adapter] = slot
            self._stack = None
        self._users[adapter] += 1
        self._recency[adapter] = None
        self._recency.move_to_end(adapter)
        return True

    def release(self, adapter: LoraAdapter) -> None:
        """Unpin `adapter` for one sequence; an unregistered one is dropped once idle."""
        self._users[adapter] -= 1
        if self._users[adapter] <= 0:
            del self._users[adapter]
            if not self._is_registered(adapter):
                self._evict(adapter)

    def drop_unregistered(self) -> None:
        """Drop the weights of idle adapters that are no longer registered."""
        for adapter in [a for a in self._slot_of if a not in self._users and not self._is_registered(a)]:
            self._evict(adapter)

    def stack(self) -> LoraStack:
        """The loaded adapters' weights, stacked per layer; rebuilt after loads and evictions."""
        if self._stack is None:
            by_slot = {self._slot_of[adapter]: weights for adapter, weights in self._weights.items()}
            self._stack = LoraStack.build(by_slot, pack=self.pack)
            # Keep each adapter as views into the stack, so its weights are held once (plus packed).
            for adapter, slot in self._slot_of.items():
                self._weights[adapter] = self._stack.weights_of(slot)
        return self._stack

    # -- internals -----------------------------------------------------------------------------

    def _is_registered(self, adapter: LoraAdapter) -> bool:
        with self._lock:
            return self._registered.get(adapter.name) == adapter

    def _free_slot(self) -> int | None:
        """An empty slot, emptied by evicting the least recently used idle adapter if needed."""
        for slot, held in enumerate(self._slots):
            if held is None:
                return slot
        for adapter in self._recency:
            if adapter not in self._users:
                slot = self._slot_of[adapter]
                self._evict(adapter)
                return slot
        return None

    def _evict(self, adapter: LoraAdapter) -> None:
        slot = self._slot_of.pop(adapter, None)
        if slot is None:
            return
        self._slots[slot] = None
        self._weights.pop(adapter, None)
        self._recency.pop(adapter, None)
        self._stack = None


__all__ = ["LoraTable"]
