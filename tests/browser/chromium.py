"""Debian's Chromium, headless, driven over the Chrome DevTools Protocol through a pipe.

``--remote-debugging-pipe`` makes Chromium read protocol messages from file descriptor 3 and write
its answers to 4, each a JSON text ended by a NUL byte; so nothing beyond the standard library
is needed (no websocket client, no WebDriver, nothing downloaded). Each user of a test gets a
:class:`Page` in a browser context of its own (own localStorage and cookies), 360 px wide.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 360, 800
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    f"--window-size={WIDTH},{HEIGHT}",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-debugging-pipe",
]
MISSING = (
    "Chromium is not installed (looked for {where}). The browser tests use Debian's chromium "
    "package: run `make test` (it runs deploy/bootstrap.sh --browser, which installs it) or "
    "`apt-get install chromium chromium-driver`."
)


class BrowserError(AssertionError):
    pass


def find_chromium() -> str:
    """The Chromium binary (KEZEK_CHROMIUM, /usr/bin/chromium or chromium on PATH); fails the
    test with the way to install it, never skips it."""
    candidates = [os.environ.get("KEZEK_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise BrowserError(MISSING.format(where=", ".join(c for c in candidates[:2] if c)))


class Chromium:
    """One headless Chromium process and its protocol pipe."""

    def __init__(self, binary: str | None = None, log_path: Path | None = None):
        binary = binary or find_chromium()
        self.profile = tempfile.mkdtemp(prefix="kezek-chromium-")
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # move the child's ends above 9, then let bash (dash takes single-digit descriptors only) put them on 3 and 4 for Chromium
        chrome_reads = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        chrome_writes = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        ours_to_chrome = to_chrome_w
        script = f'exec "$0" "$@" 3<&{chrome_reads} 4>&{chrome_writes} {chrome_reads}<&- {chrome_writes}>&-'
        log = open(log_path or os.devnull, "ab")
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", script, binary, *FLAGS, f"--user-data-dir={self.profile}",
             "about:blank"],
            pass_fds=(chrome_reads, chrome_writes),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        os.close(chrome_reads)
        os.close(chrome_writes)
        self._out = ours_to_chrome
        self._in = from_chrome_r
        self._buffer = b""
        self._next_id = 0
        self.events: dict[str | None, list[dict]] = {}
        self.version = self.send("Browser.getVersion", timeout=30)

    # -- protocol ----------------------------------------------------------------------------
    def _write(self, message: dict) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            written = os.write(self._out, data)
            data = data[written:]

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._in], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the protocol pipe (exit {self.proc.poll()})")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def _dispatch(self, message: dict) -> None:
        """An event: kept per session; a dialog (confirm) is accepted at once."""
        session = message.get("sessionId")
        self.events.setdefault(session, []).append(message)
        if message.get("method") == "Page.javascriptDialogOpening":
            self._next_id += 1
            self._write({"id": self._next_id, "method": "Page.handleJavaScriptDialog",
                         "params": {"accept": True}, "sessionId": session})

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self._next_id += 1
        mine = self._next_id
        message: dict[str, Any] = {"id": mine, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._write(message)
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if "id" not in answer:
                self._dispatch(answer)
                continue
            if answer["id"] != mine:
                continue  # the answer to a command sent without waiting (a dialog)
            if "error" in answer:
                raise BrowserError(f"{method}: {answer['error']}")
            return answer.get("result", {})

    def pump(self, seconds: float = 0.0) -> None:
        """Take in the events that arrived (waiting up to ``seconds`` for the first)."""
        deadline = time.monotonic() + seconds
        while True:
            if b"\0" not in self._buffer:
                ready, _, _ = select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    return
            self._dispatch(self._read(time.monotonic() + 5))

    def page(self, user_agent: str | None = None) -> "Page":
        return Page(self, user_agent)

    def close(self) -> None:
        try:
            self._write({"id": 0, "method": "Browser.close", "params": {}})
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """A tab in a fresh browser context (its own storage), as a 360 x 800 phone."""

    def __init__(self, browser: Chromium, user_agent: str | None = None):
        self.browser = browser
        context = browser.send("Target.createBrowserContext")["browserContextId"]
        target = browser.send(
            "Target.createTarget", {"url": "about:blank", "browserContextId": context}
        )["targetId"]
        self.session = browser.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}
        )["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": True,
            "screenWidth": WIDTH, "screenHeight": HEIGHT})
        if user_agent:
            self.call("Emulation.setUserAgentOverride", {"userAgent": user_agent})

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    # -- problems the page had --------------------------------------------------------------
    def problems(self) -> list[str]:
        """Uncaught script errors and security (CSP) messages seen so far."""
        self.browser.pump()
        out = []
        for event in self.browser.events.get(self.session, []):
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append("script error: " + json.dumps(details.get("exception", details))[:500])
            elif event.get("method") == "Log.entryAdded":
                entry = params.get("entry", {})
                if entry.get("source") in ("security", "javascript") and entry.get("level") == "error":
                    out.append(f"{entry.get('source')}: {entry.get('text')}")
        return out

    # -- navigation and scripts --------------------------------------------------------------
    def goto(self, url: str, timeout: float = 20) -> None:
        answer = self.call("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {answer['errorText']}")
        self.wait_loaded(timeout)

    def wait_loaded(self, timeout: float = 20) -> None:
        """Until the document is complete and the page script has run."""
        self.wait("document.readyState === 'complete' && !!window.Kezek", timeout,
                  "page loaded with its script")

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        answer = self.call("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
            "userGesture": True}, timeout)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"script failed: {text}\n{expression[:300]}")
        return answer.get("result", {}).get("value")

    def wait(self, expression: str, timeout: float = 10, message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except BrowserError as exc:  # e.g. the page is navigating: its context went away
                last = exc
            else:
                if last:
                    return last
            self.browser.pump(0.1)
        try:  # what the page said, if it showed an error
            shown = self.evaluate("[...document.querySelectorAll('.notice.error')]"
                                  ".filter(n => !n.hidden).map(n => n.innerText).join(' | ')")
        except BrowserError:
            shown = "?"
        raise BrowserError(f"timed out after {timeout}s waiting for {message or expression}: "
                           f"{last!r}\npage: {self.url()}\nerrors shown: {shown!r}")

    def url(self) -> str:
        try:
            return self.evaluate("location.href")
        except BrowserError:
            return "?"

    # -- the DOM -----------------------------------------------------------------------------
    def _element(self, selector: str) -> str:
        return (f"(() => {{ const el = document.querySelector({json.dumps(selector)}); "
                f"if (!el) throw new Error('no element ' + {json.dumps(selector)}); return el; }})()")

    def fill(self, selector: str, value: Any) -> None:
        self.evaluate(f"""(() => {{
            const el = {self._element(selector)};
            el.focus();
            el.value = {json.dumps(str(value))};
            el.dispatchEvent(new Event('input', {{bubbles: true}}));
            el.dispatchEvent(new Event('change', {{bubbles: true}}));
        }})()""")

    def check(self, selector: str) -> None:
        self.evaluate(f"""(() => {{
            const el = {self._element(selector)};
            if (!el.checked) el.click();
        }})()""")

    def click(self, selector: str) -> None:
        self.evaluate(f"{self._element(selector)}.click()")

    def text(self, selector: str) -> str:
        return self.evaluate(f"{self._element(selector)}.innerText")

    def exists(self, selector: str) -> bool:
        return bool(self.evaluate(f"!!document.querySelector({json.dumps(selector)})"))

    def screenshot(self, path: Path) -> Path:
        """The whole page, 360 px wide, as PNG."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = max(HEIGHT, min(int(size["height"]) + 1, 16000))
        shot = self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
