"""Whole-node input power from the BMC over IPMI DCMI: ``ipmitool dcmi power reading``, run and parsed.

ipmitool (lib/ipmi_dcmi.c, ``ipmi_dcmi_pwr_rd``) prints, for the DCMI Get Power Reading command::

        Instantaneous power reading:                   412 Watts
        Minimum during sampling period:                175 Watts
        Maximum during sampling period:                530 Watts
        Average power reading over sample period:      398 Watts
        IPMI timestamp:                           Sun Mar  6 15:13:42 2022
        Sampling period:                          00123893 Seconds.
        Power reading state is:                   activated

The "instantaneous" figure is the BMC's own rolling average over a window the firmware chooses (DCMI
leaves it to the implementation, typically about a second); the "average" line covers the sampling
period, often everything since the BMC's statistics were last reset (hours or days), so only the first
line is used. State "deactivated" is the DCMI "no power measurement available" bit: its figures are
not a measurement and the read fails. Errors (no /dev/ipmi0, no LAN session, a completion code) come on
stderr with a non-zero exit.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.model import NodeReading
from exporter.sources import SourceReadError
from exporter.sources.bmc_credentials import BmcCredentials

_WATTS = re.compile(r"^(\d+(?:\.\d+)?)\s*Watts?$", re.IGNORECASE)
_SECONDS = re.compile(r"^(\d+)\s*Seconds\.?$", re.IGNORECASE)
MAX_OUTPUT_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class DcmiPowerReading:
    """What ``ipmitool dcmi power reading`` printed, in watts and seconds."""

    instantaneous_w: float
    minimum_w: float | None = None
    maximum_w: float | None = None
    average_w: float | None = None
    sampling_period_s: float | None = None
    active: bool | None = None  # None: the line was missing (very old ipmitool)


def parse_power_reading(text: str) -> DcmiPowerReading:
    """Parse ipmitool's output; SourceReadError("malformed") when there is no instantaneous reading."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")  # the timestamp has colons too: split at the first only
        if sep:
            fields[" ".join(key.split()).lower()] = value.strip()

    def watts(key: str) -> float | None:
        match = _WATTS.match(fields.get(key, ""))
        return float(match.group(1)) if match else None

    instantaneous = watts("instantaneous power reading")
    if instantaneous is None:
        shown = text.strip().splitlines()[:1]
        raise SourceReadError("malformed", f"no instantaneous power reading in ipmitool's output {shown}")
    period = _SECONDS.match(fields.get("sampling period", ""))
    state = fields.get("power reading state is", "").lower()
    return DcmiPowerReading(
        instantaneous_w=instantaneous,
        minimum_w=watts("minimum during sampling period"),
        maximum_w=watts("maximum during sampling period"),
        average_w=watts("average power reading over sample period"),
        sampling_period_s=float(period.group(1)) if period else None,
        active=None if not state else state == "activated",
    )


def error_kind(stderr: str) -> str:
    """A short kind for a failed ipmitool run, from what it printed (lib/ipmi_dcmi.c, src/plugins)."""
    text = stderr.lower()
    if "could not open device" in text:
        return "no_device"  # no ipmi_si/ipmi_devintf driver, or no permission on /dev/ipmi0
    if any(s in text for s in ("rakp", "unauthorized name", "insufficient privilege", "password")):
        return "auth"
    if "unable to establish" in text or "session challenge" in text:
        # lanplus prints why (RAKP: unknown user, wrong password) only with -v: a refused login and an
        # unreachable BMC look the same.
        return "no_session"
    if "unable to get dcmi information" in text:
        return "no_answer"
    if "dcmi request failed" in text or "valid dcmi command was not returned" in text:
        return "not_supported"
    return "command_failed"


Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]


class IpmitoolDcmiSource:
    """The node source for ``--source.node=ipmi``; its ``read`` runs on the node poller's thread.

    Without a host it uses the local interface (``/dev/ipmi0``, root or the ipmi group). With a host it
    speaks IPMI over LAN (``-I lanplus -H host -U user``); the password goes to ipmitool through a file
    (``-f``) or the ``IPMI_PASSWORD`` environment variable of the child (``-E``), never the command line.
    """

    name = "ipmi"

    def __init__(
        self,
        ipmitool: str = "ipmitool",
        host: str | None = None,
        credentials: BmcCredentials | None = None,
        interface: str = "lanplus",
        timeout_s: float = 10.0,
        run: Runner = subprocess.run,
        privilege: str = "ADMINISTRATOR",
    ) -> None:
        self.ipmitool = ipmitool
        self.host = host
        self.credentials = credentials
        self.interface = interface
        self.timeout_s = timeout_s
        self.privilege = privilege
        self._run = run
        self.runs_total = 0

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argument vector and the child's environment (LC_ALL=C: the output's format is stable)."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
        args = [self.ipmitool]
        if self.host:
            assert self.credentials is not None
            args += [
                "-I",
                self.interface,
                "-H",
                self.host,
                "-L",
                self.privilege,
                "-U",
                self.credentials.username(),
            ]
            if (
                os.environ.get(self.credentials.password_env, "").strip()
                or not self.credentials.password_file
            ):
                env["IPMI_PASSWORD"] = self.credentials.password()
                args.append("-E")
            else:
                args += ["-f", self.credentials.password_file]
        args += ["dcmi", "power", "reading"]
        return args, env

    def read(self) -> NodeReading:
        args, env = self.command()
        self.runs_total += 1
        try:
            done = self._run(
                args,
                capture_output=True,
                timeout=self.timeout_s,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SourceReadError("timeout", f"ipmitool took longer than {self.timeout_s:g}s") from None
        except FileNotFoundError:
            raise SourceReadError("not_found", f"{self.ipmitool} not found") from None
        except OSError as exc:
            raise SourceReadError("command_failed", f"cannot run {self.ipmitool}: {exc.strerror}") from None
        stdout = _text(done.stdout)
        stderr = _text(done.stderr)
        if done.returncode != 0:
            # ipmitool prints "A valid DCMI command was not returned!" on stdout, the rest on stderr.
            message = " ".join((stderr + " " + stdout).split())[:300]
            raise SourceReadError(
                error_kind(stderr + "\n" + stdout), f"ipmitool exited {done.returncode}: {message}"
            )
        reading = parse_power_reading(stdout)
        if reading.active is False:
            raise SourceReadError(
                "not_available", "the BMC says no power measurement is available (deactivated)"
            )
        return NodeReading(power_w=reading.instantaneous_w, energy_j=None, parts=("dcmi:instantaneous",))

    def close(self) -> None:
        pass


def _text(data: Any) -> str:
    if isinstance(data, bytes):
        return data[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")
    return str(data or "")[:MAX_OUTPUT_BYTES]
