"""Every ready study's report, from a tiny run of it, opened in a real browser: headless Chromium
(the operating system's package, which ``scripts/setup.sh`` installs with apt-get where it can)
driven by Playwright, whose own browser download cannot be fetched here. Per study: every figure
decoded with a non-zero size, no console error, no page error and no failed request, every table
the report writer emitted present with its header and rows, and a screenshot saved under the
test's folder.

The browser and its flags are scripts/report_screenshot.py's, which took the README's
screenshot (docs/img/report-cot-twohop.png) of a real cpu run of cot-twohop.

Skipped, with the reason printed (``-ra``), only where Playwright or a Chromium is missing.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers import MAMBA_TINY, QUICK, TWOHOP_TINY
from reasonlab.reporting import study_report
from reasonlab.reporting.content import Figure, Item, Section, Table
from reasonlab.studies import STUDIES, run_study

ROOT = Path(__file__).resolve().parents[2]
README_STUDY = "cot-twohop"
README_SCREENSHOT = ROOT / "docs" / "img" / f"report-{README_STUDY}.png"
SCREENSHOT_SCRIPT = ROOT / "scripts" / "report_screenshot.py"
_spec = importlib.util.spec_from_file_location("report_screenshot", SCREENSHOT_SCRIPT)
assert _spec is not None and _spec.loader is not None
screenshot_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(screenshot_script)
CHROMIUM_ARGS, VIEWPORT = screenshot_script.CHROMIUM_ARGS, screenshot_script.VIEWPORT

# The cheapest run of each ready study that still goes through its analysis: two steps of a
# model one or two layers deep on a few hundred examples, one seed.
TWOHOP = TWOHOP_TINY
ICL = [
    "task.num_test=32",
    "model.n_layers=1",
    "model.d_model=8",
    "model.n_heads=2",
    "train.batch_size=8",
    "eval.at_start=false",
]
TINY = {
    "cot-circuit": [*TWOHOP, "task.khop=[]"],
    "cot-depth": [*TWOHOP, "task.khop=[]"],
    "cot-khop": [*TWOHOP, "task.khop=[3]"],  # its analysis chains the three-hop queries
    "cot-lambda": [*TWOHOP, "task.khop=[]"],
    "cot-noise": [*TWOHOP, "task.khop=[]"],
    "cot-pattern": [*TWOHOP, "task.khop=[]"],
    "cot-twohop": [*TWOHOP, "task.khop=[3]"],  # the k-hop section shows in the README's shot
    "icl-dual": ICL,
    "icl-regression": ICL,
    "icl-variants": ICL,
    **MAMBA_TINY,
    "mamba-cost": [
        "task.num_train=64",
        "task.num_test=8",
        "train.batch_size=8",
        "model.d_model=16",
    ],
}
# The analyses' own sizes, shrunk the same way (module, constant, value)
ANALYSIS_SIZES = [
    ("reasonlab.studies.circuit", "QUERIES", 20),
    ("reasonlab.studies.icl_dual", "MODEL_MS", (16, 64, 256)),
    ("reasonlab.studies.icl_dual", "SEEDS_PER_QUERY", 1),
    ("reasonlab.studies.icl_dual", "RANDOM_CASES", 4),
    ("reasonlab.studies.mamba_cost", "LENGTHS", {"cpu": [4, 8, 16]}),
    ("reasonlab.studies.mamba_cost", "REPEATS", 1),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module; a skip, with its reason, without one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    executable = screenshot_script.find_chromium()
    if executable is None:
        pytest.skip("no Chromium found (scripts/setup.sh installs it with apt-get as root)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A folder served over http on 127.0.0.1 (a free port), as a reader's server would."""
    root = tmp_path_factory.mktemp("served")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    root_url = f"http://127.0.0.1:{server.server_address[1]}"
    yield root, root_url
    server.shutdown()
    server.server_close()


def _walk(items: list[Item]) -> Iterator[Item]:
    for item in items:
        yield item
        if isinstance(item, Section):
            yield from _walk(item.items)


def _emitted(name: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> list[Item]:
    """Runs the study tiny into ``out`` and returns the items its report was rendered from."""
    for module, constant, value in ANALYSIS_SIZES:
        monkeypatch.setattr(importlib.import_module(module), constant, value)
    rendered: list[list[Item]] = []
    render = study_report.render_page

    def recording(title: str, intro: str, items: list[Item]) -> str:
        rendered.append(items)
        return render(title, intro, items)

    monkeypatch.setattr(study_report, "render_page", recording)
    result = run_study(name, "cpu", 1, out, [*TINY[name], *QUICK])
    assert result["status"] == "completed"
    assert len(rendered) == 1, "the report is rendered once per study"
    return rendered[0]


def test_every_ready_study_has_a_tiny_run_here():
    assert sorted(TINY) == sorted(STUDIES)


def _expected_tables(items: list[Item]) -> list[dict[str, Any]]:
    return [
        {"header": [str(h) for h in t.header], "rows": len(t.rows)}
        for t in _walk(items)
        if isinstance(t, Table)
    ]


# Read in the page: every image (decoded size and box) and every table (header and row count).
PAGE_STATE = """() => ({
  images: [...document.images].map(img => {
    const box = img.getBoundingClientRect();
    return {alt: img.alt, complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
            box: [box.width, box.height]};
  }),
  tables: [...document.querySelectorAll('table')].map(table => {
    const box = table.getBoundingClientRect();
    return {header: [...table.querySelectorAll('thead th')].map(th => th.textContent),
            rows: table.querySelectorAll('tbody tr').length, box: [box.width, box.height]};
  }),
  title: document.title,
})"""


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_report_renders_in_a_browser(name, browser, serve, tmp_path, monkeypatch, one_thread):
    root, root_url = serve
    items = _emitted(name, root / name, monkeypatch)
    figures = [f.alt for f in _walk(items) if isinstance(f, Figure)]
    tables = _expected_tables(items)
    assert tables, f"{name}: the report writer emitted no table"

    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else 0)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]}"))
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url[:80]))
    try:
        response = page.goto(f"{root_url}/{name}/report.html", wait_until="load")
        assert response is not None and response.ok
        page.wait_for_function("[...document.images].every(img => img.complete)")
        state = page.evaluate(PAGE_STATE)
        shot = tmp_path / f"report-{name}.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()

    # a self-contained page: nothing fetched but the page itself (figures are embedded)
    assert requested == [f"{root_url}/{name}/report.html"]
    assert errors == []
    assert state["title"].startswith(name)
    assert [img["alt"] for img in state["images"]] == figures
    for img in state["images"]:
        assert img["complete"], img["alt"]
        assert min(img["natural"]) > 0 and min(img["box"]) > 0, img
    assert [{"header": t["header"], "rows": t["rows"]} for t in state["tables"]] == tables
    assert all(min(t["box"]) > 0 for t in state["tables"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_the_readme_shows_a_report_screenshot():
    assert README_SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"](docs/img/{README_SCREENSHOT.name})" in (ROOT / "README.md").read_text()
