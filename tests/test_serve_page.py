"""The web page in a real browser: Debian's chromium, headless, driven by Playwright (no browser download).

Upload a generated video through the file input, watch it encode, ask a
question, see the answer stream in and the selector heatmap drawn; screenshots
(desktop and phone-sized) are saved to the test's temporary folder, and copied
to ``$RECOT_TEST_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from recot.data.sample_video import write_sample_video
from recot.serve import ServeSettings, create_app
from test_serve_fixtures import PHRASE, live_server, scripted_chat

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the page test needs playwright (pip install playwright)"
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="the page test needs Debian's chromium (apt-get install chromium); none on PATH"
)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
KEY = "page-key"


def save_artifact(path: Path) -> None:
    target = os.environ.get("RECOT_TEST_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    # Two minutes of drifting shapes over a sky, a red disc from 1:10 to 1:20: 120 frames at 1 fps, 30 groups.
    video = write_sample_video(root / "sky.mp4", duration=120, fps=2, size=(320, 180), needle_at=70, needle_seconds=10,
                               progress=False)  # fmt: skip
    settings = ServeSettings(model_name="tiny-scripted", api_key=KEY, upload_dir=root / "uploads", thumbnails=12)
    with live_server(create_app(scripted_chat(root / "cache"), settings)) as url:
        yield {"url": url, "video": video, "root": root}


@pytest.fixture()
def browser_context(site, tmp_path):
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 900},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def colours_in_row(page, selector: str, height: float) -> int:
    """Distinct colours along one pixel row (at ``height`` of the canvas) of a canvas."""
    return page.eval_on_selector(
        selector,
        f"""c => {{ const y = Math.floor(c.height * {height});
                   const d = c.getContext('2d').getImageData(0, y, c.width, 1).data;
                   const colours = Array.from({{length: c.width}}, (_, x) => d.slice(4 * x, 4 * x + 3).join());
                   return new Set(colours).size }}""",
    )


def test_upload_ask_and_see_the_heatmap(site, browser_context, tmp_path) -> None:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(site["url"] + "/")

    # The server wants a key: the page asks for it, then lists the model.
    page.wait_for_selector("#key-form", state="visible")
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    page.wait_for_function("document.getElementById('model-name').textContent === 'tiny-scripted'")

    page.set_input_files("#file-input", str(site["video"]))
    page.wait_for_selector("#upload", state="visible")  # the progress bar
    page.wait_for_function("document.getElementById('video-info').textContent.includes('120 frames')")
    page.wait_for_function("document.getElementById('video-info').textContent.includes('30 groups')", timeout=60_000)
    page.wait_for_function(
        "() => { const i = document.getElementById('thumbs'); return i.complete && i.naturalWidth > 0 }"
    )
    assert page.eval_on_selector("#thumbs", "i => i.naturalWidth / i.naturalHeight") == pytest.approx(
        12 * 16 / 9, rel=0.05
    )
    assert "sky.mp4" in page.inner_text("#video-select")
    assert page.is_hidden("#upload")  # encoding finished

    page.fill("#question", "When does the red disc appear?")
    page.evaluate(
        """() => { window.answerUpdates = 0;
                   new MutationObserver(() => window.answerUpdates++).observe(
                       document.getElementById('answer'), {childList: true, characterData: true, subtree: true}); }"""
    )
    page.click("#ask-button")
    page.wait_for_selector("#answer[data-state='done']", timeout=60_000)
    assert page.inner_text("#answer") == PHRASE
    assert page.evaluate("window.answerUpdates") >= 5  # it streamed in piece by piece
    heatmap = page.eval_on_selector("#heatmap", "c => ({groups: c.dataset.groups, kept: c.dataset.keptGroups})")
    assert heatmap["groups"] == "30" and 0 < int(heatmap["kept"]) <= 30
    assert page.is_hidden("#heatmap-hint")
    assert colours_in_row(page, "#heatmap", 0.2) > 5  # a range of group colours, not one flat fill
    assert colours_in_row(page, "#strip", 0.3) > 5  # the thumbnails are drawn along the timeline
    stats = page.inner_text("#answer-stats")
    assert "visual tokens kept" in stats and "120 frames" in stats

    desktop = tmp_path / "serve_page_desktop.png"
    page.screenshot(path=str(desktop), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("window.dispatchEvent(new Event('resize'))")
    phone = tmp_path / "serve_page_phone.png"
    page.screenshot(path=str(phone), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    for shot in (desktop, phone):
        assert shot.stat().st_size > 10_000
        save_artifact(shot)
    assert errors == []


def test_page_reports_errors(site, browser_context) -> None:
    page = browser_context.new_page()
    page.goto(site["url"] + "/")
    page.evaluate(f"localStorage.setItem('recot-api-key', '{KEY}')")
    page.reload()
    page.wait_for_function("document.getElementById('model-name').textContent === 'tiny-scripted'")
    junk = site["root"] / "junk.mp4"
    junk.write_bytes(b"this is not a video at all" * 100)
    page.set_input_files("#file-input", str(junk))
    toast = page.wait_for_selector("#toast", state="visible")
    assert "junk.mp4" in toast.inner_text() and "Traceback" not in toast.inner_text()
