"""`python -m pixelmill` runs the CLI (guarded: a spawned helper process imports this module as `__mp_main__`)."""

if __name__ == "__main__":
    from pixelmill.cli import main

    main()
