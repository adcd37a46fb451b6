"""``python -m convlens.cli``."""

from . import main

raise SystemExit(main())
