"""The contract both sides share: the ledger's tables, the one module that changes state, settings, events.

It imports no door (`pixelmill/`) and neither side (`producer/`, `worker/`), and never torch.
"""
