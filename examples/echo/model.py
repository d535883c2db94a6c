"""An echo model: the request comes back, with a little about the replica that answered."""

from __future__ import annotations

import os
import time


class Model:
    def __init__(self, config=None) -> None:
        self.name = config.name if config is not None else "echo"
        self.loaded_at: float | None = None

    def load(self) -> None:
        self.loaded_at = time.time()

    def predict(self, request):
        if isinstance(request, dict) and request.get("stream"):
            return self._stream(str(request.get("text", "")))
        return {"echo": request, "model": self.name, "pid": os.getpid()}

    def _stream(self, text: str):
        for index, word in enumerate(text.split()):
            yield {"index": index, "word": word}
