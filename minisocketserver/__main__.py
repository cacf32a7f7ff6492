"""``python -m minisocketserver``: see ``minisocketserver.cli``."""

from .cli import main

raise SystemExit(main())
