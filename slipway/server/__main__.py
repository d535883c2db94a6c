"""`python -m slipway.server`: run one replica (see slipway/server/process.py)."""

from slipway.server.process import main

main()
