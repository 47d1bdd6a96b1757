"""``python -m exporter`` runs the exporter."""

from exporter.cli import main

raise SystemExit(main())
