"""Finding and launching headless Chromium (Debian's package; Playwright's own download is unreachable)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Flags that keep Chromium off the network it cannot reach here (and quiet), as root, headless.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """``CHROMIUM`` if set, else the first of chromium / chromium-browser / google-chrome on PATH."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no Chromium found: set CHROMIUM or install Debian's chromium package")


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium browser from a Playwright instance."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)


@contextmanager
def dashboard_page(browser: Any, url: str, password: str) -> Iterator[Any]:
    """A page of a fresh browser context that opened ``url`` (a dashboard page), was sent to the
    login form, logged in and is back at ``url``; the context is closed afterwards."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(url)
        yield page
    finally:
        context.close()
