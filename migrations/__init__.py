"""Alembic migrations for the pixelmill ledger (a package so installed copies can find them)."""
