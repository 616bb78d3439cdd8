"""Publishers: one subpackage per target (PostgreSQL, PayU, the pricing site).

Each reads live state back into a Catalog and applies a Plan.
"""
