"""Tariff's command line: thin Typer commands over the compiler, publishers and reports."""
