"""``python -m adamkit``: the ``adamkit`` command."""
from adamkit.cli import main

raise SystemExit(main())
