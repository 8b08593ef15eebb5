"""A screenshot of a study's report.html in headless Chromium (the operating system's package,
which scripts/setup.sh installs), driven by Playwright: the README's picture of a report.

    .venv/bin/python scripts/report_screenshot.py runs/cot-twohop-cpu/report.html \
        docs/img/report-cot-twohop.png

tests/reporting/test_report_browser.py opens every study's report with the same browser and
flags (it imports ``CHROMIUM_ARGS`` and ``find_chromium`` from here).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these Chromium reaches out to Google's services, refused on a closed network
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1180, "height": 860}


def find_chromium() -> str | None:
    """The system's Chromium, or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def main(report: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise SystemExit("no Chromium found (scripts/setup.sh installs it with apt-get as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(report.resolve().as_uri(), wait_until="load")
        page.wait_for_function("[...document.images].every(img => img.complete)")
        page.screenshot(path=str(out))  # the first screen
        browser.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: report_screenshot.py REPORT_HTML OUT_PNG")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
