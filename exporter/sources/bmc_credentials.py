"""BMC user name and password from environment variables or files, read when used; never from the YAML."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.secrets import SecretUnavailable, read_secret
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
        try:
            return read_secret(what, env, path)
        except SecretUnavailable as exc:
            raise SourceReadError("auth", exc.detail) from None
