"""The `pixelmill` command line (entry point `pixelmill.cli:main`). The app and its registrations are in
pixelmill/cli/commands.py, the commands in one module per group (listed there)."""

from pixelmill.cli.commands import app, main

__all__ = ["app", "main"]
