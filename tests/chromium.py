"""Headless Chromium driven over the DevTools protocol on a pipe: load a page, collect console errors,
query the DOM, take a full-page PNG screenshot. Every wait is bounded; the browser is always stopped.

The pipe transport (``--remote-debugging-pipe``): Chromium reads commands from fd 3 and writes answers and
events to fd 4, each a JSON message ended by a NUL byte (chromium/src content/browser/devtools/
devtools_pipe_handler.cc). Nothing listens on a port. Commands are those of the protocol's stable domains
(Target, Page, Runtime, Log, Emulation): https://chromedevtools.github.io/devtools-protocol/
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("chromium is not installed (Debian package chromium; .ci/run installs it)")


@dataclass
class PageResult:
    console_errors: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # every console and log message, any level


class Browser:
    """One headless Chromium process and one page (tab) attached in flat mode."""

    def __init__(
        self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int, timeout: float
    ) -> None:
        self.proc = proc
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.timeout = timeout
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.session = ""

    def _send(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        while data:
            written = os.write(self.to_browser, data)
            data = data[written:]
        return self._next_id

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed its DevTools pipe (exit status {self.proc.poll()})")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> dict[str, Any]:
        """Send a command and wait for its answer; events that arrive meanwhile are kept."""
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self._events.append(message)

    def wait_event(self, method: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for index, event in enumerate(self._events):
            if event["method"] == method:
                return self._events.pop(index)
        while True:
            message = self._read_message(deadline)
            if message.get("method") == method:
                return message
            if "method" in message:
                self._events.append(message)

    def drain(self, seconds: float) -> None:
        """Collect events for a short while (console messages logged just after load)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                message = self._read_message(deadline)
                if "method" in message:
                    self._events.append(message)
        except TimeoutError:
            return

    def open(self, url: str, width: int = 1000, height: int = 800) -> PageResult:
        """Open url in a new page, wait for its load event, and return its console findings so far."""
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False
        )["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        answer = self.call("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {answer['errorText']}")
        self.wait_event("Page.loadEventFired", self.timeout)
        self.drain(0.5)
        return self.findings()

    def findings(self) -> PageResult:
        result = PageResult()
        for event in self._events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                result.messages.append(f"console.{params.get('type')}: {text}")
                if params.get("type") in ("error", "assert"):
                    result.console_errors.append(text)
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text", "")
                result.messages.append(f"exception: {text}")
                result.console_errors.append(text)
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                text = f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
                result.messages.append(f"log.{entry.get('level')}: {text}")
                if entry.get("level") == "error":
                    result.console_errors.append(text)
        return result

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in answer:
            raise RuntimeError(f"evaluating {expression!r}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, max_height: float | None = None) -> bytes:
        """A PNG of the whole page (not just the viewport), or of its top ``max_height`` CSS pixels."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        height = size["height"] if max_height is None else min(size["height"], max_height)
        clip = {"x": 0, "y": 0, "width": size["width"], "height": height, "scale": 1}
        data = self.call(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
        )["data"]
        return base64.b64decode(data)


@contextmanager
def browser(timeout: float = 60.0) -> Iterator[Browser]:
    """Start headless Chromium with a throwaway profile; stop it (and remove the profile) on exit."""
    binary = chromium_binary()
    profile = tempfile.mkdtemp(prefix="footprint-chromium-")
    cmd_in, browser_in = os.pipe()  # we write commands, Chromium reads them on fd 3
    browser_out, events_in = os.pipe()  # Chromium writes on fd 4, we read

    def wire_fds() -> None:
        # Move the pipe ends onto 3 and 4 through fresh descriptors, so an end that already is 3 or 4 is
        # not closed or left close-on-exec by the shuffle.
        read_end, write_end = os.dup(cmd_in), os.dup(events_in)
        os.dup2(read_end, 3)
        os.dup2(write_end, 4)

    args = [
        binary,
        "--headless",
        "--remote-debugging-pipe",
        "--no-sandbox",  # tests run as root; the sandbox refuses root
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": "disabled:"}
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=wire_fds,  # only dup2 in the child, before exec
        pass_fds=(3, 4),
        env=env,
    )
    os.close(cmd_in)
    os.close(events_in)
    session = Browser(proc, browser_in, browser_out, timeout)
    try:
        yield session
    finally:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            session.call("Browser.close", session=False)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        os.close(browser_in)
        os.close(browser_out)
        shutil.rmtree(profile, ignore_errors=True)


def save_for_docs(name: str, url: str, width: int = 1000, height: int = 1200) -> None:
    """With FOOTPRINT_SCREENSHOTS=DIR (``make screenshots``), write the manual's screenshot of url there:
    the top ``height`` pixels, so the PNG stays small."""
    folder = os.environ.get("FOOTPRINT_SCREENSHOTS")
    if not folder:
        return
    with browser() as chrome:
        chrome.open(url, width=width, height=height)
        png = chrome.screenshot(max_height=height)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as fh:
        fh.write(png)
