"""End to end in a real browser: draw a held-out Omniglot character on the page, teach it, draw it again.

Debian's Chromium and chromedriver driven by Selenium (nothing downloads a browser); the server is
the real `fewshot serve` command on a free 127.0.0.1 port over a stroke index (the default stroke
encoder); the drawings are Greek pen trajectories (Greek is held out from that encoder's training),
replayed as pen pointer events on a phone-sized window. A screenshot is saved under tmp (and to
$FEWSHOT_SCREENSHOT when set: that is how docs/serve.png is made).
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]

if not CHROMIUM.exists() or not DRIVER.exists():
    pytest.skip(f"{CHROMIUM} or {DRIVER} absent (apt-get install chromium chromium-driver; .ci/run does)",
                allow_module_level=True)
pytest.importorskip("selenium", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.actions.pointer_input import PointerInput  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", params=["sequence", "image"])
def server(request, tmp_path_factory):
    """`fewshot serve` on a stroke index (strokes sent as trajectories) or an image index (the page renders
    the drawing to a PNG), on a free loopback port; SIGTERM at the end. Yields (url, index name, alphabet)."""
    from fewshot.encoders.sequence_builtin import DEFAULT_SEQUENCE_ENCODER
    from fewshot.fewshot_index import FewShotIndex
    from fewshot.serve.process import repo_env, serve_process

    kind = request.param
    # Greek is held out from the stroke encoder's training, Korean from the image encoder's
    name, alphabet, encoder = (("greek-strokes", "Greek", DEFAULT_SEQUENCE_ENCODER) if kind == "sequence"
                               else ("korean-images", "Korean", None))
    path = tmp_path_factory.mktemp("browser") / name
    FewShotIndex.create(path, encoder=encoder).close()
    with serve_process([path], env=repo_env(ROOT), cwd=ROOT) as (proc, url):
        yield url, name, alphabet
    # uvicorn finishes in-flight requests, runs the shutdown (indexes closed), then re-raises SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM)
    err = proc.stderr.read()
    assert "Traceback" not in err and "ERROR" not in err, err[-2000:]


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=412,915", "--no-first-run"):  # a phone-sized window
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=str(DRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def strokes(strokes_zip):
    from fewshot.data.strokes import load_omniglot_strokes

    return load_omniglot_strokes(strokes_zip, alphabets=["Greek", "Korean"])


def draw(driver, raw: np.ndarray) -> None:
    """Replay a ``[T, 3]`` (x, y, end) trajectory as pen pointer events on the canvas."""
    from fewshot.sequences import array_to_strokes

    pad = driver.find_element(By.ID, "pad")
    w, h = pad.size["width"], pad.size["height"]
    s = (min(w, h) - 6) / 125.0  # Omniglot's frame is 105 units; some drawings overshoot it a little
    pen = PointerInput("pen", "pen")
    actions = ActionBuilder(driver, mouse=pen, duration=5)
    for stroke in array_to_strokes(raw):
        pts = [(int(round(3 + x * s - w / 2)), int(round(3 - y * s - h / 2))) for x, y in stroke[::2]]
        actions.pointer_action.move_to(pad, *pts[0]).pointer_down()
        for p in pts[1:] or pts:
            actions.pointer_action.move_to(pad, *p)
        actions.pointer_action.pointer_up()
    actions.perform()


def teach(driver, raw: np.ndarray, label: str) -> None:
    draw(driver, raw)
    field = driver.find_element(By.ID, "label")
    field.clear()
    field.send_keys(label)
    driver.find_element(By.ID, "teach").click()
    WebDriverWait(driver, 30).until(lambda d: label in d.find_element(By.ID, "classes").text)


def test_draw_teach_and_recognise_in_chromium(server, browser, strokes, tmp_path):
    url, name, alphabet = server
    by_char: dict[str, list[np.ndarray]] = {}
    for seq, lab, group in zip(strokes.items, strokes.labels, strokes.groups):
        if group == alphabet:
            by_char.setdefault(lab, []).append(seq)
    chars = sorted(by_char)[:5]
    browser.set_window_size(412, 915)
    browser.get(url + "/")
    WebDriverWait(browser, 30).until(lambda d: name in d.find_element(By.ID, "index").text)
    paint = browser.execute_script(
        "const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null;")
    print(f"first contentful paint: {paint} ms")
    for i, ch in enumerate(chars):  # one drawing teaches each class (drawer i's)
        teach(browser, by_char[ch][i], ch.split("/")[-1])
    target = chars[2]
    browser.find_element(By.ID, "clear").click()
    draw(browser, by_char[target][10])  # another person's drawing of the same character
    browser.find_element(By.ID, "classify").click()
    answer = browser.find_element(By.ID, "answer")
    WebDriverWait(browser, 30).until(lambda d: answer.text not in ("-", ""))
    WebDriverWait(browser, 10).until(  # each candidate shows its class's stored example
        lambda d: all(img.get_attribute("src") for img in d.find_elements(By.CSS_SELECTOR, "#candidates img")))
    shot, wide = tmp_path / "serve_phone.png", tmp_path / "serve.png"
    browser.save_screenshot(str(shot))
    browser.set_window_size(960, 720)  # and as on a laptop, both columns in view
    browser.save_screenshot(str(wide))
    if os.environ.get("FEWSHOT_SCREENSHOT") and alphabet == "Greek":
        shutil.copy(wide, os.environ["FEWSHOT_SCREENSHOT"])
    print(f"screenshots: {shot} {wide}")
    assert answer.get_attribute("data-label") == target.split("/")[-1], browser.find_element(By.ID, "status").text
    assert paint is None or paint < 5000
