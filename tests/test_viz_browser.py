"""The browser app as a user meets it: a real server, headless Chromium, Step, Play, a click.

Needs Debian's chromium (``scripts/install-browser.sh`` installs it when missing, as root) and
Playwright for Python (never ``playwright install``: the system browser is launched by path).
Without a browser the test fails with the reason; ``MARROW_SKIP_BROWSER=1`` skips it instead.
Set ``MARROW_VIZ_SCREENSHOT=docs/images/viz.png`` to also keep the screenshot for the README.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MARROW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SERVER_START_S = 60
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> str:
    if os.environ.get("MARROW_SKIP_BROWSER") == "1":
        pytest.skip("MARROW_SKIP_BROWSER=1")
    # Always run the set-up script (idempotent, silent when done): it also puts Solara's
    # front-end files in this environment's cache, which a fresh .venv lacks.
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install-browser.sh"), sys.executable],
                          capture_output=True, text=True)
    if done.returncode != 0 or not Path(CHROMIUM).exists():
        pytest.fail(f"scripts/install-browser.sh could not set up the browser test (browser "
                    f"expected at {CHROMIUM}):\n{done.stderr.strip()}\n(set MARROW_SKIP_BROWSER=1 "
                    "to skip the browser test)", pytrace=False)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install playwright (do not run "
                    "`playwright install`; the test drives the system chromium)", pytrace=False)
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """``marrow-abm viz default`` on a free port; killed with its process group afterwards."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "marrow_abm.viz.cli", "default",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp_path, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n"
                            + (tmp_path / "server.log").read_text(), pytrace=False)
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not up after {SERVER_START_S} s:\n"
                            + (tmp_path / "server.log").read_text(), pytrace=False)
            time.sleep(0.3)
        yield url, tmp_path / "server.log"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _src(page, selector: str) -> str:
    return page.locator(selector).first.get_attribute("src") or ""


def _attr(page, selector: str, name: str) -> str:
    return page.locator(selector).first.get_attribute(name) or ""


def test_viz_browser_step_play_inspect_without_error(chromium, server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, log_path = server
    page_errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            tissue, plots = "img.marrow-tissue-image", "img.marrow-plots-image"
            page.wait_for_selector(tissue, timeout=60_000)
            page.wait_for_selector(plots, timeout=30_000)
            assert page.get_by_text("BLC (Alcam+ bone-lining)").count() >= 1  # legend
            assert page.get_by_text("t = 0 h", exact=False).count() >= 1

            # Show a field: at t = 0 it is zero everywhere; one step of MSC secretion changes it.
            page.get_by_role("button", name="MSC mitogen").click()
            page.wait_for_function(
                "() => document.querySelector('.marrow-legend') && "
                "document.querySelector('.marrow-legend').innerText.includes('MSC mitogen')",
                timeout=15_000)
            before = _src(page, tissue)
            page.get_by_role("button", name="Step").click()
            page.wait_for_function(
                f"src => document.querySelector('{tissue}').getAttribute('src') !== src",
                arg=before, timeout=20_000)
            assert page.get_by_text("t = 1 h", exact=False).count() >= 1
            after_step = _src(page, tissue)
            records_before = int(_attr(page, plots, "data-records"))
            plots_before = _src(page, plots)

            # Play until two more records (every 6 h) have been plotted, then pause.
            page.get_by_role("button", name="▶").click()
            page.wait_for_function(
                f"n => +document.querySelector('{plots}').getAttribute('data-records') >= n",
                arg=records_before + 2, timeout=40_000)
            page.get_by_role("button", name="❚❚").click()
            assert _src(page, tissue) != after_step
            assert _src(page, plots) != plots_before

            # Click the middle of the section: the inspector names the voxel's zone and fields.
            box = page.locator(tissue).bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector("table.marrow-inspector", timeout=15_000)
            text = page.locator("table.marrow-inspector").inner_text()
            assert "zone" in text and "MSC mitogen here" in text

            page.wait_for_timeout(500)
            shot = tmp_path / "viz.png"
            page.screenshot(path=str(shot), full_page=True)
            keep = os.environ.get("MARROW_VIZ_SCREENSHOT")
            if keep:
                shutil.copyfile(shot, keep)
            body = page.locator("body").inner_text()
            alerts = page.locator(".v-alert.error").count()
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    assert "Traceback" not in body and "error in step" not in body, body[:2000]
    assert alerts == 0, body[:2000]
    assert not page_errors, page_errors
    assert "Traceback" not in log_path.read_text()
