"""The exporter's own exception types."""

from __future__ import annotations


class ConfigError(Exception):
    """A bad configuration value. Printed as one line naming the key; the exporter exits 2."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem
