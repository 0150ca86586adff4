"""``python -m benchmarks``: run the suite (see :mod:`benchmarks._cli`)."""

from benchmarks._cli import main

raise SystemExit(main())
