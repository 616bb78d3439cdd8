"""Tariff's offline core: load YAML, validate it, compile it into one typed Catalog, diff catalogs."""
