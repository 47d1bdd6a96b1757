"""``python -m exporter.validate_gpu --out DIR``: the kit without the exporter's web dependencies."""

from exporter.validate_gpu.main import main

raise SystemExit(main())
