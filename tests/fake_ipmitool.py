#!/usr/bin/env python3
"""A fake ``ipmitool`` for tests: prints what ipmitool 1.8.19 prints for ``dcmi power reading``.

Copied next to a scenario file ``<itself>.json`` by tests/test_ipmi.py. Output formats from ipmitool's
source (github.com/ipmitool/ipmitool): lib/ipmi_dcmi.c ``ipmi_dcmi_pwr_rd`` (the seven lines, "%8d
Watts", the timestamp from asctime() in 1.8.18 and ipmi_timestamp_numeric() later, "%08u Seconds.",
"activated"/"deactivated" from bit 6 of the state byte), ``chk_rsp`` (completion codes on stderr,
"A valid DCMI command was not returned!" on stdout), src/plugins/open/open.c (no /dev/ipmi0) and
src/plugins/lanplus/lanplus.c (no LAN session; the RAKP detail is only printed with -v, so a wrong
password and an unreachable BMC look the same). OpenBMC's deactivated reading with figures and a 1970
timestamp is from openbmc/openbmc issue 3257. Exit status 1 on every error, as ipmitool's main returns.

The true power is ``base + amp*sin(2*pi*(t - t0)/period)`` (wall clock, as the scenario gives it); the
"instantaneous" reading is its average over the BMC's window ``window_s`` ending now, in whole watts.
"""

import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__)


def true_energy(s, t):
    w = 2 * math.pi / s["period_s"]
    x = t - s["t0"]
    return s["base_w"] * x + s["amp_w"] / w * (1 - math.cos(w * x))


def reading(s, now):
    window = s.get("window_s", 1.0)
    return (true_energy(s, now) - true_energy(s, now - window)) / window


def block(inst, lo, hi, avg, stamp, period, state):
    return (
        "\n"
        f"    Instantaneous power reading:              {inst:8d} Watts\n"
        f"    Minimum during sampling period:           {lo:8d} Watts\n"
        f"    Maximum during sampling period:           {hi:8d} Watts\n"
        f"    Average power reading over sample period: {avg:8d} Watts\n"
        f"    IPMI timestamp:                           {stamp}\n"
        f"    Sampling period:                          {period:08d} Seconds.\n"
        f"    Power reading state is:                   {state}\n"
        "\n"
    )


def main():
    scenario = json.loads(HERE.with_suffix(".json").read_text())
    argv = sys.argv[1:]
    with open(HERE.with_suffix(".calls"), "a") as log:
        log.write(json.dumps({"argv": argv, "env_password": "IPMI_PASSWORD" in os.environ}) + "\n")
    if argv[-3:] != ["dcmi", "power", "reading"]:
        print("Invalid command", file=sys.stderr)
        return 1
    if "-H" in argv:  # LAN: the password comes from -f FILE or -E (IPMI_PASSWORD)
        if "-f" in argv:
            password = Path(argv[argv.index("-f") + 1]).read_text().splitlines()[0]
        elif "-E" in argv:
            password = os.environ.get("IPMI_PASSWORD", "")
        else:
            password = ""
        user = argv[argv.index("-U") + 1] if "-U" in argv else ""
        if (user, password) != (scenario.get("user"), scenario.get("password")):
            print("Error: Unable to establish IPMI v2 / RMCP+ session", file=sys.stderr)
            return 1
    mode = scenario["mode"]
    time.sleep(scenario.get("delay_s", 0.0))
    now = time.time()
    stamp = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(now))
    if mode == "activated":
        watts = round(reading(scenario, now))
        sys.stdout.write(block(watts, watts - 40, watts + 90, watts - 5, stamp, 123893, "activated"))
        return 0
    if mode == "openbmc_deactivated":
        sys.stdout.write(block(319, 319, 319, 319, "Thu Jan  1 00:00:00 1970", 0, "deactivated"))
        return 0
    if mode == "not_available":
        sys.stdout.write(block(0, 0, 0, 0, "Thu Jan  1 00:00:00 1970", 0, "deactivated"))
        return 0
    if mode == "no_device":
        print(
            "Could not open device at /dev/ipmi0 or /dev/ipmi/0 or /dev/ipmidev/0: No such file or directory",
            file=sys.stderr,
        )
        return 1
    if mode == "no_answer":
        print("\n    Unable to get DCMI information", file=sys.stderr)
        return 1
    if mode == "invalid_command":
        print("\n    DCMI request failed because: Invalid command (c1)", file=sys.stderr)
        return 1
    if mode == "not_dcmi":
        sys.stdout.write("\n    A valid DCMI command was not returned! (0)")
        return 1
    if mode == "garbage":
        sys.stdout.write("\n    Instantaneous power reading:              lots Watts\n")
        return 0
    if mode == "hang":
        time.sleep(60)
        return 0
    raise SystemExit(f"unknown scenario mode {mode}")


if __name__ == "__main__":
    sys.exit(main())
