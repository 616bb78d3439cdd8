"""The PostgreSQL publisher: read the live catalog back, plan against it, apply in one transaction."""
