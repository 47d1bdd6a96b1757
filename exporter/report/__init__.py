"""The period footprint report: energy, emissions, water and data quality from Prometheus' stored counters."""
