"""Dashboard cold start and update latency in a real browser:
`python benchmarks/dashboard_cold.py [--bundle bench-imagenet] [--runs 3] [--browser-cache cold warm]`.

For each run and each first page (Overview, Trade-off), starts a fresh dashboard server
(`python -m dashboard`, as `make dashboard` does; 127.0.0.1 only: every cache empty, the OS page cache warm),
opens the page in headless Chromium and measures, from the navigation's start, the time until the
page's first result is drawn (Overview: its metrics; Trade-off: its chart, drawn by plotly) and
until the whole page is done (the app idle), and the server's peak resident memory (VmHWM). Then
it moves the `a` slider a few times and records each update's latency in the browser and the sidebar's status
line (VRF recompute, page update). Writes a screenshot of the Trade-off page with the status line
(`--screenshot`) and prints a markdown table; `--compare-app` also measures another checkout's app
(e.g. the commit before precompute stored the live tables: the straightforward side) in the same
run, and prints the ratios. Needs Debian's chromium and the playwright package.
"""

from __future__ import annotations

import argparse
import json
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


def move_a(page, steps: int) -> list[dict]:
    """Moves the `a` slider by one keyboard step `steps` times; per step the browser latency (action to
    idle with the new value in the URL) and the status line's figures."""
    thumb = page.locator("[data-testid='stSlider']").filter(has_text="a: centre").get_by_role("slider")
    out = []
    for i in range(steps):
        thumb.focus()
        t0 = page.evaluate("performance.now()")
        page.keyboard.press("ArrowLeft" if i % 2 else "ArrowRight")
        value = float(thumb.input_value())
        ms = page.wait_for_function(DONE["slider"], arg=[t0, "a", value], timeout=TIMEOUT_MS, polling=20).json_value()
        line = status_line(page)
        nums = [float(x) for x in re.findall(r"\*?\*?(\d+) ms", line)]
        out.append({"browser_ms": ms, "recompute_ms": nums[0] if nums else None,
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
        moves = move_a(page, updates)
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
                                              "dashboard/app.py: the straightforward side) in the same run")
    parser.add_argument("--compare-runs", type=int, default=1, help="runs of --compare-app per page")
    parser.add_argument("--json", help="also write the raw figures here")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    results = []
    viewport = {"viewport": {"width": 1500, "height": 1300}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for cache in args.browser_cache:
            shared, port = None, free_port()
            if cache == "warm":  # one unmeasured visit fills the browser's cache (Streamlit's and plotly's JS)
                shared = browser.new_context(**viewport)
                one_run(shared, port, args, "Trade-off", None, 0, args.app)
            for run in range(args.runs):
                for first in PAGES:
                    context = shared or browser.new_context(**viewport)
                    shot = Path(args.screenshot) if run == args.runs - 1 and first == "Trade-off" else None
                    r = {**one_run(context, port if shared else free_port(), args, first, shot, args.updates,
                                   args.app), "browser_cache": cache}
                    if not shared:
                        context.close()
                    results.append(r)
                    print(f"{cache} browser cache, run {run + 1}, {first}: {r['first_ms'] / 1000:.2f} s, done "
                          f"{r['complete_ms'] / 1000:.2f} s, peak {r['peak_gib']:.2f} GiB; updates "
                          f"{[round(u['browser_ms']) for u in r['updates']]} ms", file=sys.stderr)
            if shared:
                shared.close()
        baseline = []
        for run in range(args.compare_runs if args.compare_app else 0):  # the straightforward side, same run
            for first in PAGES:
                context = browser.new_context(**viewport)
                baseline.append(one_run(context, free_port(), args, first, None, 0, args.compare_app))
                context.close()
                print(f"compare app, run {run + 1}, {first}: {baseline[-1]['first_ms'] / 1000:.2f} s, "
                      f"peak {baseline[-1]['peak_gib']:.2f} GiB", file=sys.stderr)
        browser.close()
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    print(f"| first page, browser cache | cold start: first result drawn (median of {args.runs}, max) | "
          "whole page done | server peak RSS (max) | slider update in the browser (median, max) | "
          "VRF recompute (median) | page update on the server (median) |")
    print("|---|---|---|---|---|---|---|")
    for cache in args.browser_cache:
        for first in PAGES:
            rs = [r for r in results if r["first"] == first and r["browser_cache"] == cache]
            ups = [u for r in rs for u in r["updates"]]
            print(f"| {first}, {cache} | {med([r['first_ms'] for r in rs]) / 1000:.2f} s "
                  f"(max {max(r['first_ms'] for r in rs) / 1000:.2f}) | "
                  f"{med([r['complete_ms'] for r in rs]) / 1000:.2f} s | "
                  f"{max(r['peak_after_updates_gib'] for r in rs):.2f} GiB | "
                  f"{med([u['browser_ms'] for u in ups]):.0f} ms (max {max(u['browser_ms'] for u in ups):.0f}) | "
                  f"{med([u['recompute_ms'] for u in ups if u['recompute_ms'] is not None]):.0f} ms | "
                  f"{med([u['server_ms'] for u in ups if u['server_ms'] is not None]):.0f} ms |")
    if baseline:
        print(f"\n| first page (cold browser cache) | this app | {args.compare_app} | ratio (time, memory) |")
        print("|---|---|---|---|")
        for first in PAGES:
            this = [r for r in results if r["first"] == first and r["browser_cache"] == args.browser_cache[0]]
            base = [r for r in baseline if r["first"] == first]
            t, b = med([r["first_ms"] for r in this]), med([r["first_ms"] for r in base])
            mt, mb = max(r["peak_gib"] for r in this), max(r["peak_gib"] for r in base)
            print(f"| {first} | {t / 1000:.2f} s, {mt:.2f} GiB | {b / 1000:.2f} s, {mb:.2f} GiB | "
                  f"{b / t:.1f}x, {mb / mt:.1f}x |")
    print(f"\nserver start (imports, before the browser connects): "
          f"{med([r['server_start_s'] for r in results]):.1f} s; screenshot: {args.screenshot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"this": results, "compare": baseline}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
