"""The container's HEALTHCHECK: asks this exporter's /healthz on loopback, at the port it was told to use.

The port comes from ``FOOTPRINT_WEB_LISTEN_ADDRESS`` (the flag's environment variable), default
``:9877``. A server with TLS on (``--web.config.file``) is asked over HTTPS without verifying its
certificate: the check talks to its own process over loopback and ``/healthz`` carries nothing secret.
Exit status 0 when the exporter answers 200, else 1, as Docker expects.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

from exporter.config import FLAGS_BY_NAME


def _url(address: str, scheme: str) -> str:
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "[::1]" if host in ("[::]", "::") else "127.0.0.1"
    return f"{scheme}://{host}:{port}/healthz"


def check(address: str, timeout_s: float = 4.0) -> bool:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    for scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(
                _url(address, scheme), timeout=timeout_s, context=insecure if scheme == "https" else None
            ) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False  # it answered, and not with 200: unhealthy
        except (OSError, ValueError):
            continue  # refused, or plain HTTP to a TLS port: try HTTPS
    return False


def main() -> int:
    flag = FLAGS_BY_NAME["web.listen-address"]
    return 0 if check(os.environ.get(flag.env) or str(flag.default)) else 1


if __name__ == "__main__":
    sys.exit(main())
