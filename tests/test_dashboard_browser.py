"""The dashboard in a real browser: started as `make dashboard` does (`python -m dashboard`, a subprocess),
Debian's chromium through Playwright.

Moves a slider with the keyboard, opens the inspector on the Samples page, box-selects points on the
embedding map, and saves a screenshot of every page under test-artifacts/screenshots/.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "screenshots"
PAGES = {"overview": "", "tradeoff": "tradeoff", "distances": "distances", "samples": "samples",
         "embedding": "embedding", "per_class": "per_class", "sensitivity": "sensitivity",
         "compare": "compare"}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(synthetic_bundles):
    port = free_port()
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SHOTS.parent / "streamlit-server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
         "--server.address", "127.0.0.1", "--", "--bundles", str(synthetic_bundles)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not become healthy; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


def settle(pg) -> None:
    """Wait until the script run is over and every chart has drawn."""
    pg.wait_for_timeout(400)
    pg.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=90_000)
    pg.wait_for_function("""() => [...document.querySelectorAll("[data-testid='stPlotlyChart']")]
                              .every(e => e.querySelector('.main-svg'))
                            && !document.querySelector("[data-testid='stSkeleton']")""", timeout=60_000)
    pg.wait_for_timeout(300)


def open_page(pg, base: str, name: str) -> None:
    pg.goto(f"{base}/{PAGES[name]}")
    pg.wait_for_selector("[data-testid='stApp']")
    settle(pg)
    exceptions = pg.locator("[data-testid='stException']")
    assert exceptions.count() == 0, exceptions.first.inner_text()


def screenshot(pg, name: str) -> Path:
    """The whole page: the viewport grows to the main area's height (Streamlit scrolls inside it)."""
    height = pg.evaluate("document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    pg.set_viewport_size({"width": 1440, "height": min(max(height, 1000), 6000)})
    settle(pg)
    path = SHOTS / f"{name}.png"
    pg.screenshot(path=str(path))
    pg.set_viewport_size({"width": 1440, "height": 1000})
    return path


def url_param(pg, name: str) -> str:
    return parse_qs(urlparse(pg.url).query)[name][0]


def test_slider_moves_with_the_keyboard(server, page):
    open_page(page, server, "overview")
    before = float(url_param(page, "a"))
    thumb = page.locator("[data-testid='stSlider']").filter(has_text="a: centre").get_by_role("slider")
    thumb.focus()
    for _ in range(40):
        page.keyboard.press("ArrowLeft")
    settle(page)
    after = float(url_param(page, "a"))
    assert after < before - 0.02
    assert f"a = {after:.3f}" in page.locator("[data-testid='stMain'] [data-testid='stAlert']").first.inner_text()
    assert "VRF recompute" in page.locator("[data-testid='stSidebar']").inner_text()


def test_clicking_a_vrf_point_adopts_its_a(server, page):
    open_page(page, server, "tradeoff")
    # The visible point of the VRF curve farthest from every other trace's points, in pixels.
    point = page.evaluate("""() => {
        const gd = document.querySelector("[data-testid='stPlotlyChart'] .js-plotly-plot");
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        const px = (t, j) => [xa._offset + xa.l2p(t.x[j]), ya._offset + ya.l2p(t.y[j])];
        const inside = ([x, y]) => x >= xa._offset && x <= xa._offset + xa._length
                                   && y >= ya._offset && y <= ya._offset + ya._length;
        const vrf = gd._fullData.find(d => d.name === 'VRF');  // decoded arrays
        const others = gd._fullData.filter(d => d !== vrf)
            .flatMap(t => Array.from(t.x, (_, j) => px(t, j)));
        let best = null;
        for (let j = 0; j < vrf.x.length; j++) {
            const p = px(vrf, j);
            if (!inside(p)) continue;
            const gap = Math.min(...others.map(([x, y]) => Math.hypot(x - p[0], y - p[1])));
            if (!best || gap > best.gap) best = {gap, x: r.left + p[0], y: r.top + p[1], a: vrf.customdata[j][1]};
        }
        return best;
    }""")
    before = float(url_param(page, "a"))
    page.mouse.move(point["x"], point["y"])
    page.wait_for_timeout(300)
    page.mouse.click(point["x"], point["y"])
    settle(page)
    after = float(url_param(page, "a"))
    assert after != before and after == pytest.approx(point["a"], abs=1e-3)


def test_samples_inspector(server, page):
    open_page(page, server, "samples")
    page.get_by_role("button", name="Inspect").first.click()
    settle(page)
    inspector = page.locator(".st-key-inspector")
    inspector.wait_for(state="visible")
    text = inspector.inner_text()
    assert "Top-5 classes" in text and "Nearest zero-shot failure training images" in text
    assert inspector.locator("img").count() >= 2  # the image and its neighbours
    screenshot(page, "samples")


def test_embedding_box_select(server, page):
    open_page(page, server, "embedding")
    chart = page.locator("[data-testid='stPlotlyChart']").first
    chart.hover()
    chart.locator(".modebar-btn[data-title='Box Select']").click()
    box = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + 0.25 * box["width"], box["y"] + 0.25 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.6 * box["height"], steps=12)
    page.mouse.up()
    settle(page)
    caption = page.get_by_text("points selected")
    caption.wait_for(state="visible")
    assert page.get_by_role("button", name="Inspect").count() > 0
    screenshot(page, "embedding")


@pytest.mark.parametrize("name", ["overview", "tradeoff", "distances", "per_class"])
def test_screenshot(server, page, name):
    open_page(page, server, name)
    assert screenshot(page, name).stat().st_size > 10_000
