"""``python -m samkit``: the same as the ``samkit`` command."""

from samkit.cli import main

raise SystemExit(main())
