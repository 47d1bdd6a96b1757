"""Benchmarks of the exporter: speed at scale, overhead beside reference tools, and accounting accuracy."""
