"""Secrets (passwords, tokens) from an environment variable or a file, read at use time; never logged.

One reader for every secret the exporter and the report command use (BMC logins, carbon provider
tokens and logins, the report's Prometheus credentials), so that they agree on precedence, on
trimming and on what an unreadable file means. Messages name the variable or the file, never a value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

UNREADABLE = "unreadable"
EMPTY = "empty"
UNSET = "unset"


@dataclass(frozen=True)
class SecretUnavailable(Exception):
    """Why a secret cannot be read: ``reason`` (UNREADABLE, EMPTY or UNSET) and a one-line ``detail``
    that names the file or the variable and, for a file, why it cannot be read."""

    what: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return self.detail


def read_secret_file(path: str, what: str) -> str:
    """The file's text with surrounding white space removed. A file that cannot be opened, is not
    UTF-8 text, or holds only white space raises SecretUnavailable."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecretUnavailable(what, UNREADABLE, f"{what} file {path} cannot be read ({why})") from None
    if not value:
        raise SecretUnavailable(what, EMPTY, f"{what} file {path} is empty")
    return value


def read_secret(what: str, env: str | None, path: str | None) -> str:
    """The secret from the variable ``env`` when it is set and not blank, else from the file ``path``.

    Read on every call, so a rotated file or variable takes effect without a restart. Without either
    it raises SecretUnavailable (reason UNSET) naming the variable and the file option.
    """
    if env:
        value = os.environ.get(env, "").strip()
        if value:
            return value
    if path:
        return read_secret_file(path, what)
    where = f"set {env} or give a {what} file" if env else f"give a {what} file"
    raise SecretUnavailable(what, UNSET, f"no {what}: {where}")


def bearer_header(path: str | None) -> dict[str, str]:
    """The ``Authorization: Bearer`` header with the token in the file ``path``, read on every call
    (service-account tokens are rotated). No header where no path is given or the file does not exist:
    a default token path outside a pod means "no token", which the kubelet's read-only port accepts.
    A token file that exists but cannot be read, or is empty, raises SecretUnavailable rather than
    sending an empty token."""
    if not path or not os.path.exists(path):
        return {}
    return {"Authorization": "Bearer " + read_secret_file(path, "token")}
