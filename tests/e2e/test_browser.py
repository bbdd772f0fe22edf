"""A real browser (Debian's headless chromium, driven by selenium through chromium-driver) uses the UI
of ``airflow standalone``: log in, open the DAG list, open ``listens_import``'s trigger form (its
params and their descriptions show), trigger it from the form and see the run succeed.

Screenshots go to the fixture's data dir and to ``<repo>/data/screenshots/`` (git-ignored).
No browser is downloaded: without chromium and its driver the test skips with the reason.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.chromium import headless_chromium
from tests.e2e.airflow_standalone import REPO, Standalone

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

class Browser:
    def __init__(self, driver, shots: list[Path]) -> None:
        self.d = driver
        self.shots = shots
        self.n = 0

    def wait(self, condition, what: str, timeout_s: float = 90):
        from selenium.common.exceptions import TimeoutException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            # WebDriverException: a poll can land mid-redirect ("aborted by navigation"); poll again
            return WebDriverWait(self.d, timeout_s, poll_frequency=0.5,
                                 ignored_exceptions=(WebDriverException,)).until(condition)
        except TimeoutException:
            self.shot("timeout")
            raise AssertionError(f"browser: timed out after {timeout_s:.0f} s waiting for {what} "
                                 f"(at {self.d.current_url}); screenshot {self.shots[0].parent}") from None

    def fill(self, element, value: str) -> None:
        """Type into a React-controlled input until it holds ``value``: a re-render mid-typing can drop a key."""
        from selenium.webdriver.common.keys import Keys

        element.click()
        element.send_keys(value)
        for _ in range(3):
            if element.get_attribute("value") == value:
                return
            # Retype through the value setter React listens to (the keystrokes are real; only a
            # dropped one is repaired), then let the form re-validate.
            self.d.execute_script(
                "const [el, v] = arguments;"
                "Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(el, v);"
                "el.dispatchEvent(new Event('input', {bubbles: true}));", element, value)
            element.send_keys(Keys.END)
            time.sleep(0.5)
        raise AssertionError(f"browser: the input holds {element.get_attribute('value')!r}, not {value!r}")

    def shot(self, name: str) -> None:
        self.n += 1
        for folder in self.shots:
            folder.mkdir(parents=True, exist_ok=True)
            self.d.save_screenshot(str(folder / f"{self.n:02d}-{name}.png"))


@pytest.fixture
def browser(airflow_standalone: Standalone) -> Iterator[Browser]:
    driver = headless_chromium("1400,1000")
    shots = [airflow_standalone.data / "screenshots", REPO / "data" / "screenshots"]
    for folder in shots:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        yield Browser(driver, shots)
    finally:
        driver.quit()


def test_trigger_listens_import_from_the_ui(airflow_standalone: Standalone, browser: Browser, tiny_sample):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    af, d = airflow_standalone, browser.d
    af.unpause("listens_import")
    source_url = tiny_sample.archive.as_uri()

    # log in (simple auth manager's form)
    d.get(af.url + "/")
    browser.wait(ec.presence_of_element_located((By.NAME, "username")), "the login form")
    browser.shot("login")
    d.find_element(By.NAME, "username").send_keys("admin")
    d.find_element(By.NAME, "password").send_keys(af.password())
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    browser.wait(lambda drv: "/login" not in drv.current_url, "the login to complete")

    # the DAG list shows every DAG
    d.get(af.url + "/dags")
    browser.wait(ec.presence_of_element_located((By.XPATH, "//a[normalize-space()='listens_import']")),
                 "listens_import in the DAG list")
    for dag_id in ("listens_daily", "catalog_sync", "als_training", "store_audit"):
        assert d.find_elements(By.XPATH, f"//a[normalize-space()='{dag_id}']"), f"{dag_id} missing from the DAG list"
    browser.shot("dag-list")

    # the trigger form shows the params with their descriptions
    link = d.find_element(By.XPATH, "//a[normalize-space()='listens_import']").get_attribute("href")
    assert link.endswith("/dags/listens_import"), link
    d.get(link)  # the list re-renders while it polls: following the href beats clicking a stale element
    trigger = browser.wait(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[data-testid='trigger-dag-button']")),
                           "the Trigger button of listens_import")
    trigger.click()
    field = browser.wait(ec.visibility_of_element_located((By.ID, "element_source_url")), "the source_url field")

    def trigger_dialog(drv):
        dialogs = [e for e in drv.find_elements(By.CSS_SELECTOR, "[role=dialog]") if "Run Parameters" in e.text]
        return dialogs[0] if dialogs else False

    form = browser.wait(trigger_dialog, "the trigger dialog with its Run Parameters")
    for text in ("source_url", "sha256", "dataset", "Variable musicrec_listens_source_url",
                 "expected sha256 of the file", "dataset slug under raw/"):
        assert text in form.text, f"trigger form lacks {text!r}:\n{form.text[:1500]}"
    assert d.find_element(By.ID, "element_dataset").get_attribute("value") == "lastfm-1k"
    browser.shot("trigger-form")

    browser.fill(field, source_url)
    # sha256 stays empty: optional params must not block the form's Trigger button
    assert d.find_element(By.ID, "element_sha256").get_attribute("value") == ""
    submit = browser.wait(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[data-testid='trigger-dag-submit']")),
                          "the form's Trigger button to be enabled")
    browser.shot("trigger-form-filled")
    before = {r["dag_run_id"] for r in af.runs("listens_import")}
    clicked = datetime.now(UTC)
    submit.click()

    # the run the form created, with the form's values, succeeds under the scheduler
    deadline = time.monotonic() + 60
    new: list[dict] = []
    while not new and time.monotonic() < deadline:
        new = [r for r in af.runs("listens_import") if r["dag_run_id"] not in before]
        time.sleep(0.5)
    assert len(new) == 1, f"the form created {len(new)} runs (clicked at {clicked:%H:%M:%S})"
    run = new[0]
    assert run["run_type"] == "manual"
    conf = run["conf"]
    assert (conf.get("source_url"), conf.get("dataset")) == (source_url, "lastfm-1k"), conf
    assert conf.get("sha256") in (None, ""), conf
    af.wait_run("listens_import", run["dag_run_id"], timeout_s=240)

    d.get(f"{af.url}/dags/listens_import/runs/{run['dag_run_id']}")
    browser.wait(ec.presence_of_element_located(
        (By.XPATH, "//*[normalize-space()='success' or normalize-space()='Success']")), "the run shown as success")
    browser.shot("run-success")
