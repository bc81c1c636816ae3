"""Screenshot every page of a built site in headless Chromium, offline, and report what a reader would see.

Not part of the tests: a tool for looking at the pages before a change to the docs is resolved. It needs
Debian's Chromium (``apt-get update && apt-get install -y chromium``) and nothing else::

    NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir /tmp/site
    .venv/bin/python docs/scripts/screenshot_site.py /tmp/site /tmp/shots            # every page
    .venv/bin/python docs/scripts/screenshot_site.py /tmp/site /tmp/shots heads.html cli.html  # some
    .venv/bin/python docs/scripts/screenshot_site.py --from-disk /tmp/site /tmp/shots  # as file:// pages

The site is served from 127.0.0.1 (or, with ``--from-disk``, opened as files) and Chromium is driven
through the DevTools protocol on a pipe (no network, no extra package). Each page is rendered at
``--width`` (1280 px), waits for MathJax and the fonts, and is saved as tiles ``OUT/<page>-NN.png`` of
``--tile-height`` pixels. For each page the script prints its height, any request that left the site or
failed, console errors, formulas MathJax did not typeset, tables wider than their column and code blocks
wider than the page (both scroll inside the page; the report says by how much, and which line).
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOAD_TIMEOUT_S = 60.0
SETTLE_S = 0.5

PAGE_REPORT_JS = """(() => {
  const math = [...document.querySelectorAll('.arithmatex')];
  const tables = [...document.querySelectorAll('.md-content table')].map((table, index) => {
    const box = table.closest('.md-typeset__scrollwrap') || table.parentElement;
    return {index, overflow: table.scrollWidth - box.clientWidth,
            header: [...table.querySelectorAll('th')].map(th => th.textContent.trim()).join(' | ')};
  }).filter(table => table.overflow > 1);
  const code = [...document.querySelectorAll('.md-content pre > code')].filter(
    block => block.scrollWidth > block.clientWidth + 1).map(
    block => block.innerText.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '').slice(0, 80));
  return {height: document.documentElement.scrollHeight,
          math: math.length, untypeset: math.filter(el => !el.querySelector('mjx-container')).length,
          tables, code_scrolling: code};
})()"""

WAIT_JS = """(window.MathJax && MathJax.startup && MathJax.startup.promise
  ? MathJax.startup.promise : Promise.resolve()).then(() => document.fonts.ready).then(() => true)"""


class DevTools:
    """A minimal client of Chromium's DevTools protocol over ``--remote-debugging-pipe``."""

    def __init__(self, chromium: str, width: int) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        self._profile = tempfile.TemporaryDirectory(prefix="screenshot-site-")

        def wire_pipes() -> None:  # the protocol's descriptors: 3 in, 4 out (via copies: 3 or 4 may be taken)
            commands_copy, replies_copy = os.dup(commands_read), os.dup(replies_write)
            os.dup2(commands_copy, 3)
            os.dup2(replies_copy, 4)

        self.process = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars=false",
             f"--user-data-dir={self._profile.name}", f"--window-size={width},900", "about:blank"],
            preexec_fn=wire_pipes, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply; events that arrive meanwhile go to ``self.events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout_s: float) -> None:
        """Read until the event ``method`` arrives (or ``timeout_s`` passes)."""
        deadline = time.monotonic() + timeout_s
        while not any(event.get("method") == method for event in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout_s} s")
            self.events.append(self._read())

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        """End Chromium and remove its profile."""
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self._commands)
        os.close(self._replies)
        self._profile.cleanup()


def site_pages(site: Path) -> list[str]:
    """The path of every page of the site, relative to it (``index.html``, ``api/heads.html``, ...)."""
    return sorted(path.relative_to(site).as_posix() for path in site.rglob("*.html")
                  if "assets" not in path.parts and path.name != "404.html")


def serve(site: Path) -> ThreadingHTTPServer:
    """Serve ``site`` on a free port of 127.0.0.1, in a background thread."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def screenshot_page(browser: DevTools, base: str, page: str, out: Path, width: int, tile_height: int
                    ) -> dict[str, Any]:
    """Load one page, save its tiles under ``out`` and return what the page report found."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Network", "Runtime"):
        browser.send(f"{domain}.enable", session)
    browser.send("Emulation.setDeviceMetricsOverride", session, width=width, height=900,
                 deviceScaleFactor=1, mobile=False)
    browser.events.clear()
    browser.send("Page.navigate", session, url=base + page)
    browser.wait_for("Page.loadEventFired", LOAD_TIMEOUT_S)
    browser.send("Runtime.evaluate", session, expression=WAIT_JS, awaitPromise=True)
    time.sleep(SETTLE_S)
    evaluated = browser.send("Runtime.evaluate", session, expression=PAGE_REPORT_JS, returnByValue=True)
    if "exceptionDetails" in evaluated:
        raise RuntimeError(f"the page report failed on {page}: {evaluated['exceptionDetails']}")
    report = evaluated["result"]["value"]
    name = page.removesuffix(".html").removesuffix("index").strip("/").replace("/", "-") or "home"
    tiles = []
    for number, top in enumerate(range(0, report["height"], tile_height), start=1):
        height = min(tile_height, report["height"] - top)
        clip = {"x": 0, "y": top, "width": width, "height": height, "scale": 1}
        shot = browser.send("Page.captureScreenshot", session, format="png", clip=clip,
                            captureBeyondViewport=True)
        path = out / f"{name}-{number:02d}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        tiles.append(path.name)
    events = browser.events
    report["remote_requests"] = sorted({event["params"]["request"]["url"] for event in events
                                        if event.get("method") == "Network.requestWillBeSent"
                                        and not event["params"]["request"]["url"].startswith(
                                            (base, "data:", "blob:", "about:", "file:"))})
    report["failed_requests"] = sorted({event["params"].get("errorText", "") for event in events
                                        if event.get("method") == "Network.loadingFailed"} - {""})
    report["console_errors"] = [
        " ".join(str(arg.get("value", arg.get("description", ""))) for arg in event["params"]["args"])
        for event in events if event.get("method") == "Runtime.consoleAPICalled"
        and event["params"]["type"] in ("error", "warning")]
    report["tiles"] = tiles
    browser.send("Target.closeTarget", targetId=target)
    return report


def main(argv: list[str] | None = None) -> int:
    """Screenshot the pages; exit 1 if any page made a remote request or left a formula untypeset."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="a built site (mkdocs build --site-dir SITE)")
    parser.add_argument("out", type=Path, help="folder for the PNG tiles and report.json")
    parser.add_argument("pages", nargs="*", help="page paths such as heads.html (default: every page)")
    parser.add_argument("--from-disk", action="store_true",
                        help="open the pages as file:// URLs instead of serving them on 127.0.0.1")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels")
    parser.add_argument("--tile-height", type=int, default=1600, help="height of one PNG tile")
    parser.add_argument("--chromium", default="chromium", help="the Chromium executable")
    args = parser.parse_args(argv)
    site = args.site.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    browser = DevTools(args.chromium, args.width)
    server = None if args.from_disk else serve(site)
    base = site.as_uri() + "/" if server is None else f"http://127.0.0.1:{server.server_address[1]}/"
    reports = {}
    try:
        for page in args.pages or site_pages(site):
            reports[page] = report = screenshot_page(browser, base, page, args.out, args.width,
                                                     args.tile_height)
            issues = [f"{key}={report[key]}" for key in ("remote_requests", "failed_requests",
                                                        "console_errors", "tables") if report[key]]
            issues += [f"untypeset={report['untypeset']}/{report['math']}"] if report["untypeset"] else []
            issues += [f"code_scrolling={report['code_scrolling']}"] if report["code_scrolling"] else []
            print(f"/{page:<28} {report['height']:6d} px {len(report['tiles']):3d} tiles  "
                  f"{'; '.join(issues) or 'ok'}", flush=True)
    finally:
        if server is not None:
            server.shutdown()
        browser.close()
    (args.out / "report.json").write_text(json.dumps(reports, indent=2), encoding="utf-8")
    bad = [page for page, report in reports.items() if report["remote_requests"] or report["untypeset"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
