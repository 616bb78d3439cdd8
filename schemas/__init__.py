"""Tariff's JSON Schemas (draft 2020-12), one per config file kind: the config's reference documentation."""
