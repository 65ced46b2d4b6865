"""The comparison report in a real headless browser (Debian's Chromium, driven by Playwright): it
renders, every image loads, and the console shows no error. Skips, saying why, where the browser
or Playwright is missing (`.ci/run` installs both; `pip install -e .[test]` brings Playwright)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from scdpo.eval.compare import compare

CHROMIUM = os.environ.get("SCDPO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# headless as root on a machine without network: no sandbox, GPU, QUIC or background connections
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e .[test])")
    if not os.path.isfile(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set SCDPO_CHROMIUM)")
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield context.new_page()
        finally:
            context.close()


def test_comparison_report_renders_with_images_and_no_console_errors(fake_runs, tmp_path, browser_page):
    compare(fake_runs, tmp_path / "compare")
    page, errors = browser_page, []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto((tmp_path / "compare" / "report.html").as_uri(), wait_until="load")
    assert page.title() == "Comparison: base vs sc-dpo"
    titles = page.locator("h2").all_inner_texts()
    for title in ("Runs compared", "Notes and regressions", "Headline", "All metrics, pooled over the shared suites",
                  "All metrics, per suite", "Safety against quality", "Harmful rate per I2P category",
                  "Same prompts, same seeds"):
        assert title in titles
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
    assert len(images) == 4  # trade-off, categories, two grids
    assert all(complete and width > 0 for _, complete, width in images), images
    assert "83.3% ± 15.2" in page.locator("#headline table").inner_text()
    assert page.locator("li.regression").count() >= 2
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert errors == []
