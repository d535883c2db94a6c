"""Slipway: an open-source inference cloud that teams run themselves.

    import slipway
    client = slipway.Client()          # the Python SDK (slipway/client.py)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import slipway.spec` in a replica stays light.
    if name == "Client":
        from slipway.client import Client

        return Client
    raise AttributeError(f"module 'slipway' has no attribute {name!r}")
