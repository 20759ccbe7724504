"""The dashboard under load: `python benchmarks/load_test.py [--sessions 10] [--seconds 60] [--bundle LABEL]`.

Starts the real dashboard (`python -m dashboard`, as `make dashboard` does; on 127.0.0.1 only) on a
seeded synthetic bundle (or `--bundles DIR`), opens N concurrent sessions in one headless Chromium
(one browser context each, so N separate Streamlit sessions), waits until every session has drawn
its first page, then for `--seconds` each session repeatedly

- moves a VRF control in the sidebar (a, b or k) by one keyboard step (3 actions in 4), or
- opens the Samples page, inspects a random sample and goes back to the Overview (1 in 4).

An update's latency is measured in the page: from the action until the app is idle again (script
state `notRunning`) and shows the action's result: the new control value in the URL the sidebar
writes on every run, the page's title, or the inspected sample's heading. Errors: exceptions shown
by the app, JavaScript page errors, updates whose result never shows (timeout: a stale page), and
tracebacks in the server's log. Prints p50/p95/max per action and overall; `--json FILE` writes
the figures; the exit status is 1 when there was any error.
Needs Debian's chromium (`apt-get install -y chromium`) and the playwright package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SLIDERS = ("a: centre", "b: width", "k: neighbour")
UPDATE_TIMEOUT_MS = 60_000

# Records every change of the app's script and connection state (for the error report of a stuck update).
OBSERVE_RUNS = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    if (window.__runs && window.__runsApp === app) return;
    window.__runs = [];
    window.__runsApp = app;
    const note = () => window.__runs.push([app.getAttribute('data-test-script-state'), performance.now(),
                                           app.getAttribute('data-test-connection-state')]);
    const watched = ['data-test-script-state', 'data-test-connection-state'];
    new MutationObserver(note).observe(app, {attributes: true, attributeFilter: watched});
    note();
}"""
# An update is done when the app is idle and shows the action's result; returns ms since the action.
IDLE = "document.querySelector(\"[data-testid='stApp']\").getAttribute('data-test-script-state') === 'notRunning'"
DONE = {
    # The sidebar writes every control into the URL on each run: the server has the new value.
    "slider": """([t0, key, value]) => {
        const v = parseFloat(new URLSearchParams(location.search).get(key));
        return IDLE && Math.abs(v - value) <= 2e-4 * Math.max(1, Math.abs(value)) && performance.now() - t0; }""",
    "page": """([t0, title]) => {
        const h1 = document.querySelector("[data-testid='stMain'] h1");
        return IDLE && h1 && h1.innerText.startsWith(title) && performance.now() - t0; }""",
    "inspect": """([t0, heading]) => {
        const box = document.querySelector('.st-key-inspector');
        return IDLE && box && box.innerText.includes(heading) && performance.now() - t0; }""",
}
DONE = {k: v.replace("IDLE", f"({IDLE})") for k, v in DONE.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_bundles(root: Path) -> Path:
    """The seeded synthetic bundle the dashboard tests use (20 classes, 4 shifted test sets)."""
    sys.path.insert(0, str(REPO))
    from precompute.assemble import AssembleSettings
    from precompute.synthetic import write_synthetic_bundle

    write_synthetic_bundle(root / "synth", settings=AssembleSettings(
        k_max=50, wse_alphas=[round(i / 10, 2) for i in range(11)], umap_max_points=2000))
    return root


def start_dashboard(bundles: Path, port: int, log_path: Path, app: str | None = None) -> subprocess.Popen:
    """The dashboard as `make dashboard` starts it (`python -m dashboard`), or `streamlit run APP`."""
    log = open(log_path, "wb")
    launch = ["-m", "dashboard"] if app is None else ["-m", "streamlit", "run", app]
    proc = subprocess.Popen(
        [sys.executable, *launch, "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--client.toolbarMode", "viewer", "--server.fileWatcherType", "none", "--", "--bundles", str(bundles)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"streamlit did not become healthy; see {log_path}")
        time.sleep(0.5)


class Session:
    """One browser context driving one Streamlit session; records (action, latency ms) and errors."""

    def __init__(self, n: int, browser, url: str, results: dict):
        self.n, self.browser, self.url, self.results = n, browser, url, results
        self.rng = random.Random(n)
        self.walk = {name: self.rng.choice((-1, 1)) for name in SLIDERS}

    def error(self, what: str) -> None:
        self.results["errors"].append(f"session {self.n}: {what}")

    async def open(self) -> None:
        self.context = await self.browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = await self.context.new_page()
        self.page.set_default_timeout(UPDATE_TIMEOUT_MS)
        self.page.on("pageerror", lambda exc: self.error(f"page error: {exc}"))
        await self.page.goto(self.url)
        await self.page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
        await self.page.get_by_role("slider").first.wait_for()
        await self.page.evaluate(OBSERVE_RUNS)
        self.title = await self.page.locator("[data-testid='stMain'] h1").first.inner_text()

    async def update(self, kind: str, action, done: str) -> None:
        """Performs `action`, which returns what its result will look like (the arguments of `DONE[done]`;
        None: it changed nothing), then waits until the app is idle and shows it; records the latency."""
        page = self.page
        await page.evaluate(OBSERVE_RUNS)
        t0 = await page.evaluate("performance.now()")
        try:
            expected = await action()
            if expected is None:
                return
            handle = await page.wait_for_function(DONE[done], arg=[t0, *expected], timeout=UPDATE_TIMEOUT_MS,
                                                  polling=20)
            ms = await handle.json_value()
        except Exception as exc:  # a timeout or a page that went away
            try:
                runs = await page.evaluate("window.__runs.slice(-4).map(([s, t, c]) => `${s}/${c}@${t|0}`)")
            except Exception:
                runs = "?"
            self.error(f"{kind}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]} (action at {t0:.0f} ms; "
                       f"last script/connection states {runs})")
            return
        shown = page.locator("[data-testid='stException']")
        if await shown.count():
            self.error(f"{kind}: the app shows an exception: {(await shown.first.inner_text())[:300]}")
        self.results["updates"].append((kind, ms))
        server = re.search(r"page update (\d+) ms", await page.locator("[data-testid='stSidebar']").inner_text())
        if server:
            self.results["server_ms"].append(float(server.group(1)))

    async def move_slider(self) -> None:
        name = self.rng.choice(SLIDERS)
        thumb = self.page.locator("[data-testid='stSlider']").filter(has_text=name).get_by_role("slider")
        if await thumb.is_disabled():
            return

        async def step() -> list | None:
            await thumb.focus()
            before = await thumb.input_value()
            for _ in range(2):  # at a bound a key press changes nothing: turn the walk around
                await self.page.keyboard.press("ArrowRight" if self.walk[name] > 0 else "ArrowLeft")
                value = await thumb.input_value()
                if value != before:
                    return [name[0], float(value)]
                self.walk[name] *= -1
            return None

        await self.update(f"slider {name[0]}", step, "slider")
        if self.rng.random() < 0.1:
            self.walk[name] *= -1

    async def open_page(self, kind: str, link: str, title: str) -> None:
        async def click() -> list:
            await self.page.get_by_role("link", name=link).click()
            return [title]

        await self.update(kind, click, "page")

    async def inspect_a_sample(self) -> None:
        page = self.page
        await self.open_page("open Samples", "Samples", "Samples")
        buttons = page.get_by_role("button", name="Inspect")
        count = await buttons.count()
        if not count:
            self.error("no Inspect button on the Samples page")
        else:
            button = buttons.nth(self.rng.randrange(count))
            # The button's key is sa-inspect-<split>-<row>; the inspector then shows "<split> #<row>".
            key = await button.evaluate("e => [...e.closest('[class*=st-key-sa-inspect-]').classList]"
                                        ".find(c => c.startsWith('st-key-sa-inspect-'))")
            split, row = key.removeprefix("st-key-sa-inspect-").rsplit("-", 1)

            async def click() -> list:
                await button.click()
                return [f"{split} #{row}"]

            await self.update("inspect a sample", click, "inspect")
        await self.open_page("back to Overview", "Overview", self.title)
        await page.get_by_role("slider").first.wait_for()

    async def drive(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if self.rng.random() < 0.75:
                    await self.move_slider()
                else:
                    await self.inspect_a_sample()
            except Exception as exc:
                self.error(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                await asyncio.sleep(1)


async def drive_sessions(url: str, sessions: int, seconds: float) -> dict:
    from playwright.async_api import async_playwright

    results: dict = {"updates": [], "errors": [], "server_ms": []}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM,
                                          args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        warm = Session(-1, browser, url, results)  # the first session builds the app's caches
        await warm.open()
        await warm.context.close()
        drivers = [Session(i, browser, url, results) for i in range(sessions)]
        t0 = time.monotonic()
        await asyncio.gather(*(d.open() for d in drivers))
        results["open_s"] = time.monotonic() - t0
        start = time.monotonic()
        await asyncio.gather(*(d.drive(start + seconds) for d in drivers))
        results["elapsed_s"] = time.monotonic() - start
        await browser.close()
    return results


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))] if s else float("nan")


def summary(results: dict, sessions: int, seconds: float, log_path: Path) -> dict:
    tracebacks = log_path.read_text(errors="replace").count("Traceback (most recent call last)")
    kinds: dict[str, list[float]] = {}
    for kind, ms in results["updates"]:
        kinds.setdefault(kind, []).append(ms)
    rows = {"all updates": [ms for _, ms in results["updates"]], **kinds,
            "server script time (app's own line)": results["server_ms"]}
    table = {name: {"n": len(v), "p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95), "max_ms": max(v)}
             for name, v in rows.items() if v}
    return {"sessions": sessions, "seconds": seconds, "elapsed_s": round(results["elapsed_s"], 1),
            "sessions_open_s": round(results["open_s"], 1), "updates": len(results["updates"]),
            "errors": len(results["errors"]) + tracebacks, "server_tracebacks": tracebacks,
            "error_samples": results["errors"][:10], "latency": table, "cpus": os.cpu_count()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--bundles", type=Path, help="folder of bundles (default: a synthetic one, built here)")
    parser.add_argument("--bundle", help="the bundle every session opens (its label in the picker, e.g. "
                                         "bench-imagenet); default: the picker's first choice")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="vrf-load-") as tmp:
        bundles = args.bundles or synthetic_bundles(Path(tmp))
        port, log_path = free_port(), Path(tmp) / "streamlit.log"
        server = start_dashboard(bundles, port, log_path)
        try:
            url = f"http://127.0.0.1:{port}" + (f"/?bundle={args.bundle}" if args.bundle else "")
            results = asyncio.run(drive_sessions(url, args.sessions, args.seconds))
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=20)
            server.kill()  # a no-op once it has exited
            server.wait()
        report = summary(results, args.sessions, args.seconds, log_path)
    print(f"{report['sessions']} sessions for {report['elapsed_s']} s: {report['updates']} updates, "
          f"{report['errors']} errors ({report['cpus']} CPUs)")
    for name, row in report["latency"].items():
        print(f"  {name:<40} n={row['n']:>5}  p50 {row['p50_ms']:8.0f} ms  p95 {row['p95_ms']:8.0f} ms  "
              f"max {row['max_ms']:8.0f} ms")
    for line in report["error_samples"]:
        print("  error:", line)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
