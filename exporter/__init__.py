"""AI Footprint Exporter: energy and carbon footprint of AI workloads for Prometheus."""

__version__ = "0.1.0"
