"""The Gradio page driven in a real (headless) Chromium.

The app runs in a background thread of this process; Playwright's sync API drives
the system Chromium. Without Chromium, gradio or playwright the tests skip, unless
``TOOLIQA_REQUIRE_BROWSER=1``, which turns the skip into a failure. Each test leaves
a screenshot of its final page in ``artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tooliqa.tools import env_flag

from _support import REPO

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
EXAMPLES = REPO / "examples"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
RUN_TIMEOUT_MS = 90_000


def _require_browser() -> bool:
    return env_flag("TOOLIQA_REQUIRE_BROWSER")


def _skip_or_fail(reason: str) -> None:
    if _require_browser():
        pytest.fail(f"{reason} (TOOLIQA_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    try:
        import gradio  # noqa: F401
    except ImportError:
        _skip_or_fail("gradio is not installed (pip install 'tooliqa[ui]')")
    from tooliqa.ui.app import build_app

    app = build_app()
    port = _free_port()
    app.queue().launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _skip_or_fail(f"Chromium not found at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("the playwright Python package is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Any, app_url: str) -> Iterator[Any]:
    """A fresh page on the app; its final state is saved as a screenshot."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.external_requests = []

    def note(req: Any) -> None:
        if not req.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            page.external_requests.append(req.url)

    page.on("request", note)
    page.goto(app_url)
    page.wait_for_selector("#run", timeout=60_000)
    try:
        yield page
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        finally:
            context.close()


def upload(page: Any, path: Path) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(path))


OUTCOME = r"Score \d|not a usable image|failed|no usable score|not usable"


def run_and_wait(page: Any, expect: str = OUTCOME, timeout_ms: int = RUN_TIMEOUT_MS) -> str:
    """Click Assess and wait until the status matches ``expect`` (a JS regex)."""
    page.locator("#run").click()
    page.wait_for_function(
        """(pattern) => {
            const s = document.querySelector('#status');
            return s && new RegExp(pattern, 'i').test(s.innerText);
        }""",
        arg=expect,
        timeout=timeout_ms,
    )
    return page.locator("#status").inner_text()


def download_json(page: Any) -> dict[str, Any]:
    with page.expect_download(timeout=30_000) as info:
        page.locator("#download").click()
    return json.loads(Path(info.value.path()).read_text(encoding="utf-8"))


def table_rows(page: Any, elem_id: str) -> list[list[str]]:
    """The rows a gr.Dataframe shows (its cells carry data-row / data-col)."""
    cells = page.locator(f"#{elem_id} [data-row][data-col]")
    rows: dict[int, dict[int, str]] = {}
    for i in range(cells.count()):
        cell = cells.nth(i)
        r, c = int(cell.get_attribute("data-row")), int(cell.get_attribute("data-col"))
        rows.setdefault(r, {})[c] = cell.inner_text().strip()
    return [[row[c] for c in sorted(row)] for _, row in sorted(rows.items())]


def rubric_rows(page: Any) -> int:
    return len(table_rows(page, "rubric-table"))


def test_page_loads_without_external_requests(page):
    assert "Tool-IQA" in page.title()
    for elem in ("upload", "run", "score", "gauge", "rubric-table", "steps", "status", "download"):
        page.wait_for_selector(f"#{elem}", state="attached", timeout=30_000)  # a loaded machine
        assert page.locator(f"#{elem}").count() == 1, elem
    assert page.get_by_text("Check connection").is_visible()
    page.wait_for_timeout(500)
    assert page.external_requests == []


def test_underexposed_image_streams_rubric_gamma_view_and_score(page):
    upload(page, EXAMPLES / "coffee_underexposed.jpg")
    page.wait_for_selector("#upload img", timeout=30_000)
    status = run_and_wait(page)
    assert "Score" in status, status
    page.wait_for_selector("#gauge [data-score]")
    score = float(page.locator("#score input").input_value())
    assert 1.0 <= score <= 5.0
    assert page.locator("#gauge [data-score]").get_attribute("data-score") == f"{score:.2f}"
    assert rubric_rows(page) >= 5
    assert "exposure" in page.locator("#rubric-table").inner_text()
    assert page.locator("#steps img").count() >= 1
    assert "gamma_corrector" in page.locator("#trace").inner_text()
    assert page.locator("#rationale textarea").input_value().strip()

    data = download_json(page)
    assert 1.0 <= data["score"] <= 5.0 and abs(data["score"] - score) < 0.01
    assert data["backend"] == "classic" and data["error"] is None
    assert [s["tool"] for s in data["steps"]] == ["gamma_corrector"]
    assert data["steps"][0]["ok"] is True
    assert page.external_requests == []


def test_pristine_image_shows_the_box_and_the_magnified_crop(page):
    upload(page, EXAMPLES / "astronaut_pristine.jpg")
    page.wait_for_selector("#upload img", timeout=30_000)
    status = run_and_wait(page)
    assert "Score" in status and "magnifier" in status, status
    page.wait_for_function(
        "() => document.querySelectorAll('#steps img').length >= 2", timeout=30_000
    )
    assert "magnifier region" in page.locator("#steps").inner_text()
    data = download_json(page)
    (step,) = data["steps"]
    assert step["tool"] == "magnifier" and step["ok"] and len(step["box"]) == 4
    assert 1.0 <= data["score"] <= 5.0


def test_attribute_scores_and_distortion_regions_on_the_page(page):
    extras = page.locator("#extras")
    extras.get_by_label("attribute scores", exact=True).check()
    extras.get_by_label("distortion regions", exact=True).check()
    upload(page, EXAMPLES / "rocket_jpeg_q6.jpg")
    page.wait_for_selector("#upload img", timeout=30_000)
    page.locator("#question textarea, #question input").first.fill("Is it blocky?")
    status = run_and_wait(page)
    assert "Score" in status, status
    page.wait_for_selector("#regions img", timeout=30_000)
    assert "distortion region(s)" in page.locator("#trace").inner_text()

    data = download_json(page)
    assert data["attribute_scores"] and data["regions"], data
    assert {r["source"] for r in data["regions"]} >= {"piqe"}
    rows = {cells[0]: cells for cells in table_rows(page, "rubric-table")}
    for name, value in data["attribute_scores"].items():
        assert rows[name.replace("_", " ")][2] == f"{value:.2f}", rows
    assert data["query"] == "Is it blocky?"
    if data["query_answer"] is not None:
        assert "Is it blocky?" in page.locator("#query-answer").inner_text()
    assert page.locator("#uncertainty").inner_text().strip() == ""
    assert page.external_requests == []


def test_non_image_gives_a_readable_error_and_the_page_keeps_working(page, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is a text file, not a photograph\n" * 20)
    upload(page, fake)
    page.wait_for_timeout(1_000)
    status = run_and_wait(page)
    assert "not a usable image" in status.lower(), status
    assert "Traceback" not in page.content()
    assert page.locator("#download").is_disabled()

    page.locator("#upload button[aria-label='Remove Image']").first.click()
    upload(page, EXAMPLES / "coffee_blurred.jpg")
    page.wait_for_selector("#upload img", timeout=30_000)
    status = run_and_wait(page, expect=r"Score \d")
    assert "not a usable image" not in status.lower(), status
    assert 1.0 <= float(page.locator("#score input").input_value()) <= 5.0


def test_batch_of_three_is_ranked_by_score(page):
    page.get_by_role("tab", name="Batch").click()
    names = ["astronaut_pristine.jpg", "coffee_blurred.jpg", "rocket_jpeg_q6.jpg"]
    page.locator("#batch-files input[type=file]").set_input_files(
        [str(EXAMPLES / n) for n in names]
    )
    page.wait_for_timeout(1_000)
    page.locator("#batch-run").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#batch-table [data-row][data-col=\"0\"]').length >= 3",
        timeout=RUN_TIMEOUT_MS,
    )
    rows = table_rows(page, "batch-table")
    assert len(rows) == 3, rows
    seen, scores = [], []
    for cells in rows:
        assert len(cells) >= 6, cells
        seen.append(cells[1])
        scores.append(float(cells[2]))
        assert cells[5] == "", cells
    assert sorted(seen) == sorted(names)
    assert scores == sorted(scores, reverse=True)
    assert all(1.0 <= s <= 5.0 for s in scores)
    page.wait_for_function(
        "() => document.querySelectorAll('#batch-gallery img').length >= 3", timeout=30_000
    )
    assert "#1 " in page.locator("#batch-gallery").inner_text()


@pytest.mark.integration
def test_vllm_backend_from_the_page(page, vllm_server):
    page.get_by_label("vLLM server").check()
    page.locator("#server-url textarea, #server-url input").first.fill(vllm_server.base_url)
    page.locator("#model-name textarea, #model-name input").first.fill(vllm_server.model)
    page.locator("#check").click()
    page.wait_for_function(
        "() => /Connected to|Connection failed/.test(document.querySelector('#connection').innerText)",
        timeout=60_000,
    )
    connection = page.locator("#connection").inner_text()
    assert "Connected to" in connection and vllm_server.model in connection, connection

    rounds = page.locator("#rounds input[type=number]")
    rounds.fill("1")
    rounds.press("Enter")
    upload(page, EXAMPLES / "coffee_underexposed.jpg")
    page.wait_for_selector("#upload img", timeout=30_000)
    status = run_and_wait(page, timeout_ms=600_000)
    # The tiny model is random: a score, or a readable account of why there is none.
    assert re.search(r"Score \d\.\d\d|no usable score|failed", status), status
    assert "Traceback" not in page.content()
    if "Score" in status:
        assert 1.0 <= float(page.locator("#score input").input_value()) <= 5.0
    assert page.locator("#rubric-table").count() == 1
