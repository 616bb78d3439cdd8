"""`python -m cli` runs the `tariff` command (used by the demo and tests to run exactly the installed CLI)."""

from cli.main import main

main()
