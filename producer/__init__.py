"""Submission side of pixelmill: reads catalogues, writes the ledger, publishes chunks. Never imports torch."""
