"""Analytics: the report model, its renderers, the token and revenue reports and the demo history.

Imports flow cli → analytics → database: nothing here imports the CLI.
"""
