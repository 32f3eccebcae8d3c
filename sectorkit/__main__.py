"""`python -m sectorkit`: the sectorkit command line."""

from sectorkit.core.cli import main

raise SystemExit(main())
