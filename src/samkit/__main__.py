"""``python -m samkit``: the same as the ``samkit`` command."""

from samkit.cli import main

if __name__ == "__main__":  # not when a worker process re-imports the main module
    raise SystemExit(main())
