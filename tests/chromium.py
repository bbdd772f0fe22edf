"""Headless Debian chromium driven through its chromedriver (selenium), for every browser test: the
Airflow UI (tests/e2e), the musicrec pages in it and the serving API's page. Nothing is downloaded at
test time: `.ci/run` installs `chromium` and `chromium-driver` with apt; without them a test skips
with the reason."""

from __future__ import annotations

import os
import shutil

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> tuple[str, str] | str:
    """(browser, driver) paths, or the reason why there is none."""
    browser = os.environ.get("MUSICREC_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = os.environ.get("MUSICREC_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        return "no chromium/chromedriver found (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements-local.txt)"
    return browser, driver


def headless_chromium(window_size: str = "1400,1000", page_load_timeout_s: float = 120):
    """A started headless chromium WebDriver (the caller quits it); skips the test when there is none.
    ``--no-proxy-server``: every page under test is on 127.0.0.1."""
    found = find_browser()
    if isinstance(found, str):
        pytest.skip(found)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={window_size}", "--no-proxy-server"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    driver.set_page_load_timeout(page_load_timeout_s)
    return driver
