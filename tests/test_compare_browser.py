"""The Compare runs page in Chromium: pick runs in the multiselect (a run with other splits is compared on
the shared ones and the page names the rest), open a disagreement sample in the two-run inspector, and
save a screenshot under test-artifacts/screenshots/.

The server, browser and page fixtures are the dashboard browser test's; `synthetic_bundles` is overridden
here, so that server serves this module's own folder of three runs (tests/compare_runs.py)."""

import pytest
import test_dashboard_browser as dashboard_browser
from compare_runs import write_compare_bundles
from test_dashboard_browser import CHROMIUM, screenshot, settle

server, browser, page = dashboard_browser.server, dashboard_browser.browser, dashboard_browser.page  # fixtures
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")


@pytest.fixture(scope="module")
def synthetic_bundles(tmp_path_factory):
    return write_compare_bundles(tmp_path_factory.mktemp("compare-browser"))


def no_exception(pg) -> None:
    exceptions = pg.locator("[data-testid='stException']")
    assert exceptions.count() == 0, exceptions.first.inner_text()


def pick(pg, label: str) -> None:
    runs = pg.locator("[data-testid='stMultiSelect']").first
    runs.get_by_role("combobox").click()
    pg.get_by_role("option", name=label, exact=True).click()
    pg.keyboard.press("Escape")
    settle(pg)


def test_pick_runs_and_inspect_a_disagreement(server, page):
    page.goto(f"{server}/compare?bundle=run-a")
    page.wait_for_selector("[data-testid='stApp']")
    settle(page)
    no_exception(page)
    runs = page.locator("[data-testid='stMultiSelect']").first
    assert runs.get_by_role("button", name="Remove run-b").count() == 1  # the default: the sidebar's bundle + one

    runs.get_by_role("button", name="Remove run-b").click()
    settle(page)
    assert "Pick two or more runs" in page.locator("[data-testid='stMain']").inner_text()
    pick(page, "run-c")
    main = page.locator("[data-testid='stMain']").inner_text()
    assert "Not compared: shift_render (not in run-c)" in main and "600 samples against 500" in main
    no_exception(page)

    runs.get_by_role("button", name="Remove run-c").click()
    settle(page)
    pick(page, "run-b")
    assert "Compared on 6 shared split(s)" in page.locator("[data-testid='stMain']").inner_text()
    page.get_by_role("button", name="Inspect").first.click()
    settle(page)
    no_exception(page)
    inspector = page.locator(".st-key-cmp-inspector")
    inspector.wait_for(state="visible")
    text = inspector.inner_text()
    assert "run-a" in text and "run-b" in text and "VRF weight w" in text
    assert inspector.locator("[data-testid='stDataFrame']").count() == 2  # both runs' top-5 tables
    assert inspector.locator("img").count() == 1
    assert screenshot(page, "compare").stat().st_size > 10_000
