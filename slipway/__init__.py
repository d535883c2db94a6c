"""Slipway: an open-source inference cloud that teams run themselves."""

__version__ = "0.1.0"
