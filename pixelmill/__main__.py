"""`python -m pixelmill` runs the CLI."""

from pixelmill.cli import main

main()
