"""Live updates (dashboard/live.py): a VRF control reruns only the fragments that follow it, the rest of the
page stays as drawn, the controls still reach the URL and every page. AppTest on the synthetic bundle, then
the real dashboard in Chromium."""

import json

import pytest
from test_dashboard_apptest import current_params, expected_vrf, no_exception, shown_vrf, start, tuned
from test_dashboard_browser import browser, open_page, page, server, settle, url_param  # noqa: F401 (fixtures)


def sidebar_sliders(at) -> list[str]:
    return [s.key for s in at.sidebar.slider]


def test_a_slider_move_updates_the_page_the_url_and_the_status_line(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.slider(key="a").set_value(1.30).run()
    no_exception(at)
    assert shown_vrf(at) == expected_vrf(synthetic_bundles, current_params(at))
    assert at.query_params["a"] == "1.3"
    captions = [c.value for c in at.sidebar.caption]
    assert any("controls changed" in c for c in captions) and any("page update" in c for c in captions)
    assert sidebar_sliders(at) == ["a", "b", "k"] and "Bundle" in [h.value for h in at.subheader]


def test_the_rule_disables_b_from_the_live_fragment(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.radio(key="rule").set_value("binary").run()
    no_exception(at)
    assert at.slider(key="b").disabled
    assert shown_vrf(at) == expected_vrf(synthetic_bundles, current_params(at))


def test_reset_from_a_live_page_restores_the_mode(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.radio(key="mode").set_value("oracle").run()
    at.slider(key="a").set_value(1.30).run()
    at.button(key="reset").click().run()
    no_exception(at)
    assert at.radio(key="mode").value == "validation"
    assert current_params(at) == tuned(synthetic_bundles).vrf


def test_a_move_on_one_page_shows_on_the_next(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.slider(key="a").set_value(1.30).run()
    at.switch_page("views/tradeoff.py").run()
    no_exception(at)
    assert at.slider(key="a").value == pytest.approx(1.30)
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert "a = 1.300," in next(t["hovertemplate"] for t in traces if t["name"] == "VRF (current)")


def test_pages_without_a_live_fragment_draw_the_controls_after_the_page(synthetic_bundles, monkeypatch):
    at = start(synthetic_bundles, monkeypatch)
    at.switch_page("views/distances.py").run()
    at.slider(key="a").set_value(1.30).run()
    no_exception(at)
    assert sidebar_sliders(at) == ["a", "b", "k"] and at.title and at.query_params["a"] == "1.3"
    assert [c.value for c in at.sidebar.caption][-1].startswith(":material/timer:")  # the status line stays last


# ---- in the browser ------------------------------------------------------------------------------------

COUNT_MESSAGES = """(() => { const W = window.WebSocket; window.__messages = 0;
    window.WebSocket = function(...args) { const ws = new W(...args);
        ws.addEventListener('message', () => { window.__messages += 1; }); return ws; };
    window.WebSocket.prototype = W.prototype; Object.assign(window.WebSocket, W); })();"""


def a_slider(pg):
    return pg.locator("[data-testid='stSlider']").filter(has_text="a: centre").get_by_role("slider")


def press_on_a(pg, key: str, times: int = 1) -> None:
    a_slider(pg).focus()
    for _ in range(times):
        pg.keyboard.press(key)
    settle(pg)


def test_browser_slider_move_sends_only_the_live_sections(server, page):  # noqa: F811
    page.context.add_init_script(COUNT_MESSAGES)
    open_page(page, server, "overview")
    elements = page.locator("[data-testid='stElementContainer']").count()
    page.evaluate("window.__messages = 0")
    page.locator("[data-testid='stMain'] h1").click()
    page.keyboard.press("r")  # Streamlit's "rerun" key: the whole app, for comparison
    page.wait_for_timeout(500)
    settle(page)
    whole = page.evaluate("window.__messages")
    page.evaluate("window.__messages = 0")
    press_on_a(page, "ArrowLeft")
    # The bundle section (a table, metrics, two JSON views), the title and the bundle and mode pickers stay.
    assert page.evaluate("window.__messages") <= whole - 12
    after = float(url_param(page, "a"))
    assert f"a = {after:.3f}" in page.locator("[data-testid='stMain'] [data-testid='stAlert']").first.inner_text()
    assert page.locator("[data-testid='stElementContainer']").count() == elements
    assert page.locator("[data-stale='true']").count() == 0
    assert "controls changed" in page.locator("[data-testid='stSidebar']").inner_text()


def test_browser_moves_carry_to_the_next_page(server, page):  # noqa: F811
    open_page(page, server, "overview")
    press_on_a(page, "ArrowRight", 3)
    moved = float(url_param(page, "a"))
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text="Trade-off").click()
    settle(page)
    assert float(url_param(page, "a")) == pytest.approx(moved)
    assert float(a_slider(page).input_value()) == pytest.approx(moved)
    star = page.evaluate("""() => document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot")
                                  ._fullData.find(t => t.name === 'VRF (current)').hovertemplate""")
    assert f"a = {moved:.3f}," in star


def test_browser_adopting_a_point_moves_the_sidebar_slider(server, page):  # noqa: F811
    open_page(page, server, "tradeoff")
    # A visible point of the VRF curve, the one farthest from the star (the current controls).
    point = page.evaluate("""() => {
        const gd = document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot");
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        const at = (t, j) => [xa._offset + xa.l2p(t.x[j]), ya._offset + ya.l2p(t.y[j])];
        const vrf = gd._fullData.find(d => d.name === 'VRF');
        const star = at(gd._fullData.find(d => d.name === 'VRF (current)'), 0);
        let best = null;
        for (let j = 0; j < vrf.x.length; j++) {
            const [x, y] = at(vrf, j);
            const inside = x >= xa._offset && x <= xa._offset + xa._length
                           && y >= ya._offset && y <= ya._offset + ya._length;
            if (!inside) continue;
            const gap = Math.hypot(x - star[0], y - star[1]);
            if (!best || gap > best.gap) best = {gap, x: r.left + x, y: r.top + y, a: vrf.customdata[j][1]};
        }
        return best;
    }""")
    page.mouse.move(point["x"], point["y"])
    page.wait_for_timeout(300)
    page.mouse.click(point["x"], point["y"])
    settle(page)
    assert float(url_param(page, "a")) == pytest.approx(point["a"], abs=1e-3)
    # The click reran the whole app, so the sidebar's slider shows the adopted value too.
    assert float(a_slider(page).input_value()) == pytest.approx(point["a"], abs=1e-3)
