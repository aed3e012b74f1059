"""``python -m causal_wsss`` runs the command line."""

from .cli import main

raise SystemExit(main())
