"""pixelmill: the shared contract between producer and worker (settings, ledger, storage, queue)."""
