"""`python -m core`: the sectorkit command line."""

from core.cli import main

raise SystemExit(main())
