"""BMC user name and password from environment variables or files, read when used; never from the YAML."""

from __future__ import annotations

import os
from dataclasses import dataclass

from exporter.sources import SourceReadError


@dataclass(frozen=True, slots=True)
class BmcCredentials:
    """Where a BMC's user name and password come from.

    The environment wins over a file. Both are read on every login, so a rotated secret file takes
    effect without a restart. Values are never logged; errors name only the variable or the file.
    """

    username_env: str
    password_env: str
    username_file: str | None = None
    password_file: str | None = None

    def username(self) -> str:
        return self._read(self.username_env, self.username_file, "user name")

    def password(self) -> str:
        return self._read(self.password_env, self.password_file, "password")

    def problem(self) -> str | None:
        """Why the credentials cannot be read now (for a start-up check), or None when they can."""
        for read in (self.username, self.password):
            try:
                read()
            except SourceReadError as exc:
                return str(exc)
        return None

    @staticmethod
    def _read(env: str, path: str | None, what: str) -> str:
        value = os.environ.get(env, "").strip()
        if value:
            return value
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    value = handle.read().strip()
            except OSError as exc:
                raise SourceReadError("auth", f"{what} file {path} cannot be read ({exc.strerror})") from None
            if value:
                return value
            raise SourceReadError("auth", f"{what} file {path} is empty")
        raise SourceReadError("auth", f"no {what}: set {env} or give a {what} file")
