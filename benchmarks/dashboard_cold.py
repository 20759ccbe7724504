"""Dashboard cold start and update latency in a real browser:
`python benchmarks/dashboard_cold.py [--bundle bench-imagenet] [--runs 3] [--browser-cache cold warm]`.

For each run and each first page (Overview, Trade-off), starts a fresh dashboard server
(`python -m dashboard`, as `make dashboard` does; 127.0.0.1 only: every cache empty, the OS page cache warm),
opens the page in headless Chromium and measures, from the navigation's start, the time until the
page's first result is drawn (Overview: its metrics; Trade-off: its chart, drawn by plotly) and
until the whole page is done (the app idle), and the server's peak resident memory (VmHWM). Then
it moves the `a` slider up by one keyboard step `--updates` times (a new value each time) and records,
from each key press: the page's result redrawn in the browser (Overview: the headline quoting the new a;
Trade-off: the chart redrawn by plotly with the star at the new a; checked on every animation frame),
the update done (the app idle, the new value in the URL), and the sidebar's status line (VRF recompute,
the server's page update). Writes a screenshot of the Trade-off page with the status line
(`--screenshot`) and prints markdown tables (medians, quartiles and maxima) with the machine's load
averages; `--compare-app` also measures another checkout's app (e.g. the previous version) in the same
run, alternating with this one, so both see the same load. Needs Debian's chromium and the playwright package.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from load_test import CHROMIUM, DONE, IDLE, free_port, start_dashboard

REPO = Path(__file__).resolve().parents[1]
# The first result of each page: the Overview's metrics, the Trade-off's chart once plotly has drawn it.
PAGES = {"Overview": ("", "[data-testid='stMetricValue']"),
         "Trade-off": ("tradeoff", "[data-testid='stPlotlyChart'] .main-svg")}
TIMEOUT_MS = 600_000


def server_memory_gib(pid: int) -> tuple[float, float]:
    """(peak, current) resident memory of the server process, GiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) / 2**20 for k in ("VmHWM", "VmRSS"))


def status_line(page) -> str:
    text = page.locator("[data-testid='stSidebar']").inner_text()
    found = re.search(r"VRF recompute.*?page update \d+ ms", text, re.S)
    return found.group(0).replace("\n", " ") if found else ""


# What a user sees change after a move of `a` to `value`, per page (checked on every animation frame, i.e.
# just before the browser paints): the Overview's headline sentence quoting the new a (its results table
# comes from the same run), the Trade-off chart redrawn by plotly with the star at the new a. An element
# counts once the browser has replaced it (no longer marked stale).
VISIBLE = {
    "Overview": """([value]) => {
        const box = document.querySelector("[data-testid='stMain'] [data-testid='stAlert']");
        const cell = box && box.closest("[data-testid='stElementContainer']");
        return !!box && cell.getAttribute('data-stale') !== 'true'
            && box.innerText.includes('a = ' + value.toFixed(3) + ','); }""",
    "Trade-off": """([value]) => {
        const gd = document.querySelector("[data-testid='stMain'] [data-testid='stPlotlyChart'] .js-plotly-plot");
        const cell = gd && gd.closest("[data-testid='stElementContainer']");
        return !!gd && cell.getAttribute('data-stale') !== 'true' && !!gd._fullData && !!gd.querySelector('.main-svg')
            && gd._fullData.some(t => t.name === 'VRF (current)'
                                      && String(t.hovertemplate).includes('a = ' + value.toFixed(3) + ',')); }""",
}


def move_a(page, steps: int, first: str) -> list[dict]:
    """Moves the `a` slider up by one keyboard step `steps` times (a new value each time, nothing cached for
    it); per step, from the key press: the page's result redrawn (VISIBLE, checked every frame), the update
    done (the app idle with the new value in the URL), and the status line's figures (server side)."""
    thumb = page.locator("[data-testid='stSlider']").filter(has_text="a: centre").get_by_role("slider")
    out = []
    for _ in range(steps):
        thumb.focus()
        page.wait_for_timeout(300)  # the previous update's last paints and timers
        t0 = page.evaluate("performance.now()")
        page.keyboard.press("ArrowRight")
        value = float(thumb.input_value())
        drawn = page.wait_for_function(f"([t0, value]) => ({VISIBLE[first]})([value]) && performance.now() - t0",
                                       arg=[t0, value], timeout=TIMEOUT_MS, polling="raf").json_value()
        ms = page.wait_for_function(DONE["slider"], arg=[t0, "a", value], timeout=TIMEOUT_MS, polling=20).json_value()
        line = status_line(page)
        nums = [float(x) for x in re.findall(r"\*?\*?(\d+) ms", line)]
        out.append({"drawn_ms": drawn, "browser_ms": ms, "recompute_ms": nums[0] if nums else None,
                    "server_ms": nums[-1] if nums else None})
    return out


def one_run(context, port: int, args, first: str, shot: Path | None, updates: int, app: str | None) -> dict:
    """A fresh server on `port`, the page opened in `context` (a new context: cold browser cache; one
    shared by the runs on the same port: warm browser cache, as for someone who used the dashboard
    before)."""
    log = Path(tempfile.mkdtemp()) / "streamlit.log"
    t_start = time.perf_counter()
    proc = start_dashboard(Path(args.bundles), port, log, app=app)
    server_start = time.perf_counter() - t_start
    try:
        page = context.new_page()
        path, selector = PAGES[first]
        page.goto(f"http://127.0.0.1:{port}/{path}?bundle={args.bundle}")
        # Polled in the page every 20 ms: the time (since the navigation started) the first result is drawn,
        # then the time the whole page is done (the app idle).
        ms = page.wait_for_function(f"document.querySelector({json.dumps(selector)}) && performance.now()",
                                    timeout=TIMEOUT_MS, polling=20).json_value()
        done_ms = page.wait_for_function(f"({IDLE}) && performance.now()", timeout=TIMEOUT_MS,
                                         polling=20).json_value()
        if page.locator("[data-testid='stException']").count():
            raise SystemExit(f"the app shows an exception: {page.locator('[data-testid=stException]').inner_text()}")
        peak, _ = server_memory_gib(proc.pid)
        first_line = status_line(page)
        moves = move_a(page, updates, first)
        peak_after, rss_after = server_memory_gib(proc.pid)
        if shot is not None:
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"first": first, "first_ms": ms, "complete_ms": done_ms, "peak_gib": peak,
            "peak_after_updates_gib": peak_after, "rss_after_updates_gib": rss_after,
            "server_start_s": server_start, "first_status": first_line, "updates": moves}


def load() -> str:
    """The machine's load averages (1, 5, 15 min), as `uptime` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def spread(xs: list[float]) -> str:
    """median (quartiles, max) in ms."""
    if not xs:
        return "-"
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return f"{statistics.median(xs):.0f} ms ({q[0]:.0f}-{q[2]:.0f}, max {max(xs):.0f})"


def update_table(results: list[dict], apps: list[tuple[str, str | None]]) -> None:
    """Per page and app: a move of `a` to the redrawn result, to the update done, and the server's share."""
    print(f"\n| page: slider move of a (n per cell) | {' | '.join(name for name, _ in apps)} |")
    print("|---|" + "---|" * len(apps))
    rows = (("to the result redrawn in the browser", "drawn_ms"), ("to the update done (app idle)", "browser_ms"),
            ("server: page update (status line)", "server_ms"), ("server: VRF recompute", "recompute_ms"))
    for first in PAGES:
        for label, field in rows:
            cells = []
            for name, _ in apps:
                ups = [u[field] for r in results if r["first"] == first and r["app"] == name
                       for u in r["updates"] if u[field] is not None]
                cells.append(f"{spread(ups)}" + (f", n = {len(ups)}" if field == "drawn_ms" else ""))
            print(f"| {first}: {label} | {' | '.join(cells)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", default=str(REPO / "bundles"), help="folder of bundles the dashboard lists")
    parser.add_argument("--bundle", default="bench-imagenet", help="the bundle to open (its label in the picker)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--updates", type=int, default=6, help="slider moves after each cold start")
    parser.add_argument("--app", help="run `streamlit run APP` (e.g. another checkout's app, to compare) instead "
                                      "of `python -m dashboard` as `make dashboard` does")
    parser.add_argument("--screenshot", default=str(REPO / "test-artifacts/screenshots/imagenet_tradeoff.png"))
    parser.add_argument("--browser-cache", nargs="+", choices=["cold", "warm"], default=["cold", "warm"],
                        help="cold: a new browser profile per run; warm: one profile whose cache an unmeasured "
                             "visit filled (a returning user); the server is fresh in both")
    parser.add_argument("--compare-app", help="also measure `streamlit run APP` (e.g. an older checkout's "
                                              "dashboard/app.py: the previous version) in the same run, "
                                              "alternating with this one, cold browser cache")
    parser.add_argument("--compare-runs", type=int, help="runs of --compare-app per page (default: --runs)")
    parser.add_argument("--json", help="also write the raw figures here")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    this, other = "this app", f"{args.compare_app}"
    apps = [(this, args.app)] + ([(other, args.compare_app)] if args.compare_app else [])
    compare_runs = args.runs if args.compare_runs is None else args.compare_runs
    results, loads = [], [load()]
    viewport = {"viewport": {"width": 1500, "height": 1300}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for cache in args.browser_cache:
            shared, port = None, free_port()
            if cache == "warm":  # one unmeasured visit fills the browser's cache (Streamlit's and plotly's JS)
                shared = browser.new_context(**viewport)
                one_run(shared, port, args, "Trade-off", None, 0, args.app)
            for run in range(max(args.runs, compare_runs if cache == "cold" else 0)):
                for name, app in apps if run % 2 == 0 else apps[::-1]:  # alternating: both see the same load
                    if (name == this and run >= args.runs) or (name != this and (cache == "warm" or
                                                                                 run >= compare_runs)):
                        continue
                    for first in PAGES:
                        context = shared or browser.new_context(**viewport)
                        shot = Path(args.screenshot) if (name == this and run == args.runs - 1
                                                         and first == "Trade-off") else None
                        r = {**one_run(context, port if shared else free_port(), args, first, shot, args.updates,
                                       app), "browser_cache": cache, "app": name, "load": load()}
                        if not shared:
                            context.close()
                        results.append(r)
                        loads.append(r["load"])
                        print(f"{name}, {cache} browser cache, run {run + 1}, {first}: {r['first_ms'] / 1000:.2f} s, "
                              f"done {r['complete_ms'] / 1000:.2f} s, peak {r['peak_gib']:.2f} GiB; updates drawn "
                              f"{[round(u['drawn_ms']) for u in r['updates']]} ms, server "
                              f"{[u['server_ms'] for u in r['updates']]} ms; load {r['load']}", file=sys.stderr)
            if shared:
                shared.close()
        browser.close()
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    print(f"load average (1, 5, 15 min) at the start and after each page: {'; '.join(loads)}\n")
    print(f"| app, first page, browser cache | cold start: first result drawn (median of {args.runs}, max) | "
          "whole page done | server peak RSS (max) | slider move to the result redrawn (median, max) | "
          "to the update done (median) | page update on the server (median) |")
    print("|---|---|---|---|---|---|---|")
    for name, _ in apps:
        for cache in args.browser_cache:
            for first in PAGES:
                rs = [r for r in results if r["first"] == first and r["browser_cache"] == cache and r["app"] == name]
                if not rs:
                    continue
                ups = [u for r in rs for u in r["updates"]] or [{"drawn_ms": math.nan, "browser_ms": math.nan,
                                                                  "server_ms": None}]
                print(f"| {name}, {first}, {cache} | {med([r['first_ms'] for r in rs]) / 1000:.2f} s "
                      f"(max {max(r['first_ms'] for r in rs) / 1000:.2f}) | "
                      f"{med([r['complete_ms'] for r in rs]) / 1000:.2f} s | "
                      f"{max(r['peak_after_updates_gib'] for r in rs):.2f} GiB | "
                      f"{med([u['drawn_ms'] for u in ups]):.0f} ms (max {max(u['drawn_ms'] for u in ups):.0f}) | "
                      f"{med([u['browser_ms'] for u in ups]):.0f} ms | "
                      f"{med([u['server_ms'] for u in ups if u['server_ms'] is not None]):.0f} ms |")
    if args.updates:
        update_table([r for r in results if r["browser_cache"] == "cold"], apps)
    print(f"\nserver start (imports, before the browser connects): "
          f"{med([r['server_start_s'] for r in results]):.1f} s; screenshot: {args.screenshot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "loads": loads}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
