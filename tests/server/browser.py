"""Playwright driving Debian's Chromium (/usr/bin/chromium; Playwright never downloads a browser here), with
every request recorded (anything not to loopback is aborted and reported) and every console error kept.

Without /usr/bin/chromium the browser tests are skipped with the reason, except under CI
(TRADEWARDEN_REQUIRE_BROWSER=1), where that is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def require_browser() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("TRADEWARDEN_REQUIRE_BROWSER") == "1":
        pytest.fail("TRADEWARDEN_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing (apt-get install -y chromium)")
    pytest.skip("no /usr/bin/chromium (apt-get install -y chromium) for the console's browser tests")


@dataclass
class Watch:
    """What the pages did: every URL requested, the ones refused for leaving loopback, console errors."""

    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def chromium() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def watched_context(browser: Any, **options: Any) -> Iterator[tuple[Any, Watch]]:
    """A fresh browser context (its own cookies) whose requests and console errors are recorded."""
    watch = Watch()
    context = browser.new_context(**options)

    def route(route: Any) -> None:
        url = route.request.url
        watch.requests.append(url)
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:")) or host in LOOPBACK_HOSTS or f"[{host}]" in LOOPBACK_HOSTS:
            route.continue_()
        else:
            watch.outside.append(url)
            route.abort()

    context.route("**/*", route)

    def on_page(page: Any) -> None:
        page.on("console", lambda message: watch.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: watch.errors.append(str(error)))

    context.on("page", on_page)
    try:
        yield context, watch
    finally:
        context.close()


def log_in(context: Any, base: str, token: str) -> Any:
    page = context.new_page()
    page.goto(f"{base}/console/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/")
    return page


def run_async(coroutine: Any) -> Any:
    """Run a coroutine to completion from a test that drives Playwright's sync API (which keeps an event loop
    of its own in this thread): in a thread of its own."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
