"""``python -m modscale`` is the ``modscale`` command."""

from modscale.cli import main

raise SystemExit(main())
