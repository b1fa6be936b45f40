"""Headless Chromium for the dashboard tests: Debian's ``chromium`` and ``chromium-driver`` driven by selenium, with
every host but the loopback unresolvable (so a page that needs a CDN shows it), and full-page screenshots at a
desktop's and a phone's size."""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
DESKTOP = (1280, 800)
PHONE = (390, 844)


def require_browser() -> None:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER)) if path is None]
    if missing:
        pytest.skip(
            f"headless browser tests need Debian's {' and '.join(missing)} (scripts/system-deps.sh installs them)"
        )
    pytest.importorskip("selenium", reason="the browser tests need selenium (the dev extra)")


def start_chromium():
    """A headless Chromium with no network beyond 127.0.0.1 (ended by the caller with .quit())."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the network events, for requests_made()
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def requests_made(driver) -> list[dict]:
    """Every request the browser started since the last call: url, and blocked_reason when the browser itself
    refused it before it left (e.g. "csp" for the page's Content-Security-Policy)."""
    started, blocked = {}, {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            started[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            blocked[params["requestId"]] = params["blockedReason"]
    return [{"url": url, "blocked_reason": blocked.get(request)} for request, url in started.items()]


def wait_for(condition, timeout: float = 20.0, interval: float = 0.1, what: str = "a condition"):
    """Poll ``condition()`` until it returns something truthy (which is returned)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # the page is between two loads: ask again
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")


class Screenshots:
    """Full-page PNGs of each page at 1280x800 and 390x844 (device metrics emulated as a phone's) into ``directory``."""

    def __init__(self, driver, directory: Path) -> None:
        self.driver, self.directory = driver, directory
        self.taken: list[Path] = []
        self.seconds = 0.0
        directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, *, full_page: bool = True) -> None:
        """``full_page=False``: the first screen only (the API docs are many screens long)."""
        started = time.monotonic()
        for label, (width, height), mobile in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
            self._emulate(width, height, mobile)
            full_height = self.driver.execute_script("return document.documentElement.scrollHeight")
            clip = {"x": 0, "y": 0, "width": width, "height": max(height, full_height if full_page else 0), "scale": 1}
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
            )
            path = self.directory / f"{name}-{label}.png"
            path.write_bytes(base64.b64decode(shot["data"]))
            self.taken.append(path)
        self._emulate(*DESKTOP, False)
        self.seconds += time.monotonic() - started

    def _emulate(self, width: int, height: int, mobile: bool) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )
