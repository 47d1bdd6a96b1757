"""Provider secrets, read from an environment variable or a file at use time; never logged."""

from __future__ import annotations

import logging
import os
import threading

from exporter.carbon.fetch import ProviderError

log = logging.getLogger(__name__)
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(provider: str, message: str) -> None:
    with _warned_lock:
        key = f"{provider}\0{message}"
        if key in _warned:
            return
        _warned.add(key)
    log.warning("carbon provider %s: %s", provider, message)


def read_secret(provider: str, what: str, env: str | None, path: str | None) -> str:
    """The secret from ``env`` (if set and non-empty) or else from the file ``path``.

    Read on every use so a rotated file or token takes effect without a restart. A missing secret is
    an ``auth`` failure of the provider (the chain falls through), logged as a warning once, naming
    only the variable or file, never a value.
    """
    if env:
        value = os.environ.get(env, "").strip()
        if value:
            return value
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except OSError as exc:
            _warn_once(provider, f"{what} file {path} cannot be read ({exc.strerror})")
            raise ProviderError("auth", f"{what} file cannot be read") from None
        if value:
            return value
        _warn_once(provider, f"{what} file {path} is empty")
        raise ProviderError("auth", f"{what} file is empty")
    _warn_once(provider, f"{what} environment variable {env} is not set")
    raise ProviderError("auth", f"{what} environment variable {env} is not set")
