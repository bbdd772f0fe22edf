"""The ``/musicrec`` pages in the real browser through the running ``airflow standalone`` (issue 17): the nav
entries exist, Models shows the active version and the ndcg chart, a ``store_audit`` run's tab shows its
report, and the Models page's "roll back to …" button triggers ``als_rollback`` through Airflow's REST API:
the alias moves and ``home()`` follows. Screenshots go to ``data/screenshots-ui/``; with ``MUSICREC_UPDATE_DOCS=1`` the README's three are
also copied to ``docs/ui-*.png`` (not by default: a test run leaves tracked files alone).

Independent of the other e2e files' order: it triggers what it needs (an import when the lake is empty,
``catalog_sync`` and ``lyrics_enrichment`` when no song has lyrics yet, two ``als_training`` runs that differ in ``iterations`` and so name two versions, a ``store_audit`` run);
runs other tests made may exist beside them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.chromium import headless_chromium
from tests.e2e.airflow_standalone import REPO, Standalone
from tests.e2e.test_browser import Browser

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SHOTS = REPO / "data" / "screenshots-ui"
DOCS = REPO / "docs"
TRAIN = {"factors": 8, "window_days": 3650, "min_lift": 0, "tolerance": 1.0, "force": True}


@pytest.fixture
def ui_browser(airflow_standalone: Standalone) -> Iterator[Browser]:
    driver = headless_chromium("1500,1100")
    shutil.rmtree(SHOTS, ignore_errors=True)
    try:
        yield Browser(driver, [SHOTS])
    finally:
        driver.quit()


def _db(mongo_uri: str):
    from pymongo import MongoClient

    return MongoClient(mongo_uri)["musicrec_e2e"]


def _milvus(milvus_uri: str):
    from musicrec import stores

    return stores.vector_store(stores.VectorStoreSettings("milvus", uri=milvus_uri, token=""))


def _docs_copy(name: str, target: str) -> None:
    shot = sorted(SHOTS.glob(f"*-{name}.png"))[-1]
    assert shot.stat().st_size > 10_000, f"{shot} is too small to show the page"
    if os.environ.get("MUSICREC_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, DOCS / target)


def _login(af: Standalone, browser: Browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    d = browser.d
    d.get(af.url + "/")
    browser.wait(ec.presence_of_element_located((By.NAME, "username")), "the login form")
    d.find_element(By.NAME, "username").send_keys("admin")
    d.find_element(By.NAME, "password").send_keys(af.password())
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    browser.wait(lambda drv: "/login" not in drv.current_url, "the login to complete")


def _in_frame(browser: Browser, css: str, what: str):
    """Switch into the plugin's iframe once it shows ``css``; returns that element."""
    from selenium.webdriver.common.by import By

    d = browser.d

    def ready(drv):
        drv.switch_to.default_content()
        for frame in drv.find_elements(By.TAG_NAME, "iframe"):
            drv.switch_to.frame(frame)
            found = drv.find_elements(By.CSS_SELECTOR, css)
            if found:
                return found[0]
            drv.switch_to.default_content()
        return False

    return browser.wait(ready, what, timeout_s=60) and d.find_element(By.CSS_SELECTOR, css)


def _nav_entries(browser: Browser) -> set[str]:
    """The labels the navigation's *Plugins* menu lists, opening the plugin's category submenu."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = browser.d
    button = browser.wait(lambda drv: [e for e in drv.find_elements(By.XPATH, "//button[normalize-space()='Plugins']")
                                       if e.is_displayed()], "the Plugins entry of the navigation")[0]
    button.click()

    def items(drv):
        return [e for e in drv.find_elements(By.CSS_SELECTOR, "[role=menuitem]") if e.is_displayed()]

    texts = {e.text.strip() for e in browser.wait(items, "the Plugins menu", timeout_s=20)}
    category = [e for e in items(d) if e.text.strip() == "musicrec"]
    if category:  # the plugin's category: a submenu
        ActionChains(d).move_to_element(category[0]).click(category[0]).perform()
        browser.wait(lambda drv: len(items(drv)) > len(texts), "the musicrec submenu", timeout_s=20)
        texts |= {e.text.strip() for e in items(d)}
    browser.shot("nav")
    return texts


def test_pages_in_the_browser_and_rollback(airflow_standalone: Standalone, ui_browser: Browser, tiny_sample,
                                           mongo_uri: str, milvus_uri: str):
    from selenium.webdriver.common.by import By

    from musicrec import recommend
    from musicrec.als.params import ALIAS, collection_name

    af, browser, d = airflow_standalone, ui_browser, ui_browser.d
    db = _db(mongo_uri)
    af.unpause("listens_import", "als_training", "store_audit", "als_rollback")
    if not db["lake_partitions"].count_documents({"dataset": "lastfm-1k"}):
        af.wait_run("listens_import", af.trigger("listens_import", {"source_url": tiny_sample.archive.as_uri(),
                                                                    "dataset": "lastfm-1k"}), timeout_s=240)
    if not db["songs"].count_documents({"lyrics.status": {"$exists": True}}):  # the catalog and its lyrics
        af.unpause("catalog_sync", "lyrics_enrichment")
        af.wait_run("catalog_sync", af.trigger("catalog_sync", {}), timeout_s=240)
        af.wait_run("lyrics_enrichment", af.trigger("lyrics_enrichment", {"provider": "dump"}), timeout_s=300)
    versions = []
    for iterations in (3, 4):  # two versions: the first retained, the second active
        run_id = af.trigger("als_training", TRAIN | {"iterations": iterations})
        af.wait_run("als_training", run_id, timeout_s=300)
        xcom = af.get(f"/api/v2/dags/als_training/dagRuns/{run_id}/taskInstances/train/xcomEntries/return_value",
                      params={"deserialize": True, "stringify": False})
        versions.append(xcom["value"]["version"])
    old, new = versions
    assert old != new and db["models"].find_one({"_id": new})["status"] == "active"
    audit_run = af.trigger("store_audit", {"scopes": ["als"]})
    af.wait_run("store_audit", audit_run, timeout_s=300)

    _login(af, browser)
    # the nav entries: Airflow's own navigation, built from the plugin's external_views
    d.get(af.url + "/dags")
    entries = _nav_entries(browser)
    assert {"Models", "Store audit", "Lyrics"} <= entries, entries
    d.get(af.url + "/plugin/musicrec-models")
    active = _in_frame(browser, "#active-version", "the Models page in its frame")
    assert active.text == new
    assert d.find_elements(By.CSS_SELECTOR, "#ndcg-chart svg circle.point"), "no chart points"
    assert d.find_element(By.CSS_SELECTOR, f"tr[data-version='{old}']").get_attribute("data-state") == "retained"
    d.switch_to.default_content()
    browser.shot("models")
    _docs_copy("models", "ui-models.png")

    # the store_audit run's tab shows its report
    d.get(f"{af.url}/dags/store_audit/runs/{audit_run}/plugin/musicrec-audit-run")
    verdict = _in_frame(browser, "#audit-verdict", "the audit report tab")
    assert "findings before repair" in verdict.text
    d.switch_to.default_content()
    browser.shot("audit-run")
    d.get(af.url + "/plugin/musicrec-audit")
    row = _in_frame(browser, "#audit-runs", "the Store audit page")
    assert audit_run in row.text
    d.switch_to.default_content()
    browser.shot("audit")
    _docs_copy("audit", "ui-audit.png")
    d.get(af.url + "/plugin/musicrec-lyrics")
    runs = _in_frame(browser, "#lyrics-runs", "the Lyrics page")
    assert "dump" in runs.text  # the provider of the runs, from their fetch tasks' XCom
    found = int(d.find_elements(By.CSS_SELECTOR, "#lyrics-counts td")[0].text)
    assert found == db["songs"].count_documents({"lyrics.status": "found"}) > 0
    d.switch_to.default_content()
    browser.shot("lyrics")
    _docs_copy("lyrics", "ui-lyrics.png")

    # roll back from the page: the button triggers als_rollback through Airflow's REST API
    user = db["users"].find_one({f"latent_vectors.{old}": {"$exists": True},
                                 f"latent_vectors.{new}": {"$exists": True}}, {"_id": 1})["_id"]
    milvus = _milvus(milvus_uri)
    before = [r.track_id for r in recommend.home(user, 5, db=db, stores=[milvus], exclude=())]
    d.get(af.url + "/plugin/musicrec-models")
    button = _in_frame(browser, f"button.rollback[data-version='{old}']", "the roll-back button")
    button.click()
    link = browser.wait(lambda drv: drv.find_elements(By.ID, "rollback-run"), "the triggered run's link")[0]
    run_id = link.text
    d.switch_to.default_content()
    browser.shot("rollback-triggered")
    run = af.wait_run("als_rollback", run_id, timeout_s=240)
    assert run["conf"] == {"to_version": old} and run["run_type"] == "manual"
    assert milvus.alias_target(ALIAS) == collection_name(old)
    assert db["models"].find_one({"_id": old})["status"] == "active"
    after = recommend.home(user, 5, db=db, stores=[milvus], exclude=())
    assert recommend.serving_model(milvus)[0] == old
    # home() now ranks with the old version's own vectors
    vec = db["users"].find_one({"_id": user})["latent_vectors"][old]
    assert [r.track_id for r in after] == [k for k, _ in milvus.search(collection_name(old), vec, 5)]

    # and forward again, from the page
    d.get(af.url + "/plugin/musicrec-models")
    _in_frame(browser, f"button.rollback[data-version='{new}']", "the roll-forward button").click()
    run_id = browser.wait(lambda drv: drv.find_elements(By.ID, "rollback-run"), "the triggered run")[0].text
    d.switch_to.default_content()
    af.wait_run("als_rollback", run_id, timeout_s=240)
    assert milvus.alias_target(ALIAS) == collection_name(new)
    assert [r.track_id for r in recommend.home(user, 5, db=db, stores=[milvus], exclude=())] == before
