"""The `slipway` command line (Typer + Rich)."""
