"""``python -m experiments.bench``: the serving benchmark (``make bench``)."""

from experiments.bench.serving import main

raise SystemExit(main())
