"""``python -m coffer_upstream``: the same as the ``coffer-upstream`` script."""

from coffer_upstream.cli import main

raise SystemExit(main())
