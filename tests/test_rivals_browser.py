"""The rival methods in a real browser (the dashboard as `python -m dashboard` starts it, Debian's chromium
through Playwright, the fixtures of test_dashboard_browser.py): the Trade-off chart draws the logit ensembles'
curves, DaWin's and the ablations' points and the ceiling's two dashed lines; the inspector's table shows the
rivals' columns. Screenshots go to test-artifacts/screenshots/."""

import pytest
from test_dashboard_browser import browser, open_page, page, screenshot, server, settle  # noqa: F401

from vrf_core import evaluate as ev

CEILING = "either model right"


def test_tradeoff_chart_shows_the_rivals(server, page):  # noqa: F811
    open_page(page, server, "tradeoff")
    drawn = page.evaluate("""() => {
        const gd = document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot");
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const inside = (v, a) => v >= Math.min(...a.range) && v <= Math.max(...a.range);
        return {traces: gd._fullData.filter(t => t.visible === true).map(t => [t.name, t.x.length]),
                shapes: gd._fullLayout.shapes.map(s => [s.name, s.type === 'line' && s.line.dash,
                                                        s.xref === 'paper' ? inside(s.y0, ya) : inside(s.x0, xa)]),
                labels: gd._fullLayout.annotations.map(a => a.text),
                svg: [...gd.querySelectorAll('.textpoint text')].map(t => t.textContent)};
    }""")
    traces = dict(drawn["traces"])
    assert traces[ev.ROW_LOGIT] == traces[ev.ROW_LOGIT_CAL] == traces["OSE"] > 2  # curves over the alphas
    assert traces[f"{ev.ROW_LOGIT} (tuned)"] == traces[f"{ev.ROW_LOGIT_CAL} (tuned)"] == 1
    for method in (ev.ROW_DAWIN, ev.ROW_DAWIN_TRANSDUCTIVE, ev.ROW_VRF_TRAIN, ev.ROW_VRF_ZS):
        assert traces[method] == 1 and method in drawn["svg"], f"{method}: a labelled point"
    assert sorted(drawn["shapes"]) == [[f"{CEILING} (ID)", "dash", True], [f"{CEILING} (OOD)", "dash", True]]
    assert sum(CEILING in text for text in drawn["labels"]) == 2
    assert screenshot(page, "tradeoff-rivals").stat().st_size > 10_000


def test_inspector_has_the_rival_columns(server, page):  # noqa: F811
    open_page(page, server, "samples")
    page.get_by_role("button", name="Inspect").first.click()
    settle(page)
    inspector = page.locator(".st-key-inspector")
    inspector.wait_for(state="visible")
    headers = inspector.locator("[data-testid='stDataFrame'] [role='columnheader']")
    assert headers.all_inner_texts()[:6] == ["class", "ZS", "FT", "VRF", "logit (T)", "DaWin"]
    text = inspector.inner_text()
    assert "Rivals (tuned on" in text and ("✓ DaWin" in text or "✗ DaWin" in text)
    choice = inspector.locator("[data-testid='stMultiSelect']")
    choice.click()
    page.get_by_role("option", name=ev.ROW_VRF_ZS).click()
    page.keyboard.press("Escape")
    settle(page)
    assert "VRF ZS-feat" in inspector.inner_text()
    page.set_viewport_size({"width": 2400, "height": 1000})  # room for every column of the virtualised grid
    settle(page)
    assert headers.all_inner_texts()[4:7] == ["logit (T)", "DaWin", "VRF ZS-feat"]
    assert screenshot(page, "inspector-rivals").stat().st_size > 10_000


@pytest.mark.parametrize("name", ["overview", "per_class"])
def test_screenshot_with_rivals(server, page, name):  # noqa: F811
    open_page(page, server, name)
    assert screenshot(page, f"{name}-rivals").stat().st_size > 10_000
