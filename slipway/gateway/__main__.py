"""`python -m slipway.gateway`: one gateway process (see slipway.gateway.serve)."""

from slipway.gateway.serve import main

main()
