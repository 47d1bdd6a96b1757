"""Provider secrets, read from an environment variable or a file at use time; never logged."""

from __future__ import annotations

import logging
import threading

from exporter import secrets
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
    only the variable or file, never a value. The provider's error, which reaches self-metrics and
    the provider's status, leaves the file's path out.
    """
    try:
        return secrets.read_secret(what, env, path)
    except secrets.SecretUnavailable as exc:
        _warn_once(provider, exc.detail)
        if exc.reason == secrets.UNSET:
            message = f"{what} environment variable {env} is not set" if env else f"no {what} file given"
        else:
            message = f"{what} file {'is empty' if exc.reason == secrets.EMPTY else 'cannot be read'}"
        raise ProviderError("auth", message) from None
