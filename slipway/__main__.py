from slipway.cli.main import main

main()
