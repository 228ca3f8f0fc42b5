"""`python -m pixelmill` runs the CLI (guarded: importing this module runs nothing)."""

if __name__ == "__main__":
    from pixelmill.cli import main

    main()
