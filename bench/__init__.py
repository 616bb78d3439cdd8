"""Benchmarks for `make bench`: a large generated catalog and subscriber base, timed plan and apply.

Not part of the installed package; run `python bench/run.py [--quick]`.
"""
