"""The demo page at / in a real headless Chromium (Debian's, through its chromedriver; no
browser download), against a real uvicorn: what it shows equals the JSON answer.

Screenshots are saved under tests/artifacts/ (ignored by git) as test artifacts.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, VOICED, corpus_dir, running_server
from media import make_video

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1700",
         # The webcam test: a fake camera and microphone, allowed without a prompt.
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def _skip_reason() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return ("Chromium and its driver are not installed (Debian: apt-get install chromium chromium-driver; "
                "scripts/install.sh does it for the dev extra)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the dev extra)"
    return None


if (reason := _skip_reason()) is not None:
    pytest.skip(reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@contextlib.contextmanager
def chromium(profile: Path, *extra_flags: str):
    """A headless Chromium driven by the system's chromedriver, named: Selenium Manager (which
    would download one) never runs."""
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, *extra_flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_state(driver, timeout: float = 240) -> str:
    """Wait for the page to finish a request: body[data-state] is `done` or `error`."""
    WebDriverWait(driver, timeout, poll_frequency=0.25).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def open_page(driver, server) -> None:
    driver.get(server.url + "/")
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "idle")


def upload(driver, path: Path) -> str:
    driver.find_element(By.ID, "file").send_keys(str(path))
    return wait_state(driver)


def shown_bars(driver, view: str) -> list[tuple[str, float, str, float]]:
    """(class, data-p, text shown, fill width in % of the track) for each bar of one view."""
    figure = driver.find_element(By.ID, f"bars-{view}")
    rows = []
    for bar in figure.find_elements(By.CSS_SELECTOR, ".bar"):
        fill = bar.find_element(By.CSS_SELECTOR, ".fill")
        track = bar.find_element(By.CSS_SELECTOR, ".track")
        width = 100 * fill.size["width"] / track.size["width"]
        rows.append((bar.get_attribute("data-class"), float(bar.get_attribute("data-p")),
                     bar.find_element(By.CSS_SELECTOR, ".value").text, width))
    return rows


def check_bars(driver, view: str, probs: dict[str, float], classes: list[str]) -> None:
    rows = shown_bars(driver, view)
    assert [r[0] for r in rows] == classes, "one bar per class, in the model's order"
    for name, p, text, width in rows:
        assert p == probs[name]
        assert text == f"{100 * probs[name]:.1f} %"
        assert math.isclose(width, 100 * probs[name], abs_tol=1.0), (name, width, probs[name])


def post(server, path: Path, **kw) -> dict:
    with open(path, "rb") as fh:
        r = httpx.post(server.url + "/predict", files={"file": (path.name, fh, "application/octet-stream")},
                       timeout=180, **kw)
    return r.json()


@pytest.fixture(scope="module")
def classes(server) -> list[str]:
    return httpx.get(server.url + "/v1/models").json()["models"][0]["classes"]


def test_page_is_served_from_the_package(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(server.url + asset).status_code == 200
    assert "http" not in r.text.replace("http-equiv", ""), "nothing loaded from elsewhere"
    assert "/" not in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_upload_real_clip_shows_the_json_answer(browser, server, classes):
    clip = corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"
    open_page(browser, server)
    assert upload(browser, clip) == "done", browser.find_element(By.ID, "error").text
    body = post(server, clip)                        # the same file, straight to the API
    assert browser.find_element(By.ID, "label").text.lower() == body["label"]
    check_bars(browser, "fused", body["probabilities"], classes)
    shown = json.loads(browser.find_element(By.ID, "raw").get_attribute("textContent"))
    assert shown["probabilities"] == body["probabilities"]
    frames = [float(li.get_attribute("data-t")) for li in browser.find_elements(By.CSS_SELECTOR, "#frames li")]
    assert frames == [f["t"] for f in body["summary_frames"]]
    by_modality = body.get("probabilities_by_modality") or {}
    for view in ("audio", "face"):
        figure = browser.find_element(By.ID, f"bars-{view}")
        if by_modality.get(view):
            check_bars(browser, view, by_modality[view], classes)
        else:
            assert not figure.is_displayed()
    path = screenshot(browser, "demo-page-cremad")
    assert path.stat().st_size > 10_000


def test_timeline_chart_and_error_message(browser, server, classes, tmp_path):
    clip = make_video(tmp_path / "six.mp4", seconds=6)
    open_page(browser, server)
    browser.find_element(By.ID, "timeline").click()
    browser.find_element(By.ID, "segment").send_keys("2")
    assert upload(browser, clip) == "done"
    body = post(server, clip, params={"timeline": "true", "segment_s": 2})
    lines = browser.find_elements(By.CSS_SELECTOR, "#timeline-chart polyline")
    assert sorted(line.get_attribute("data-class") for line in lines) == sorted(classes)
    labels = browser.find_elements(By.CSS_SELECTOR, "#timeline-chart text[data-segment]")
    assert [t.text for t in labels] == [s["label"] for s in body["timeline"]]
    screenshot(browser, "demo-page-timeline")

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video\n" * 200)
    assert upload(browser, broken) == "error"
    error = browser.find_element(By.ID, "error")
    answer = post(server, broken)["error"]
    assert error.get_attribute("data-code") == answer["code"] == "undecodable"
    assert answer["message"] in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_modality_bars_when_the_answer_has_them(browser, server, classes):
    """`probabilities_by_modality` (audio and face views beside the fused one): drawn when the
    answer carries them (here a canned answer in place of the server's)."""
    n = len(classes)
    fused = {c: (i + 1) / (n * (n + 1) / 2) for i, c in enumerate(classes)}
    audio = {c: 1.0 / n for c in classes}
    answer = {"label": classes[-1], "probabilities": fused, "modalities": {"audio": "used", "face": "detected"},
              "probabilities_by_modality": {"audio": audio, "face": None},
              "summary_frames": [{"t": 0.5, "face_detected": True}], "duration_s": 2.0,
              "model": {"name": "canned", "version": "0"}, "timings_ms": {}}
    open_page(browser, server)
    browser.execute_script("""
        const canned = arguments[0];
        window.fetch = async (url, init) => new Response(JSON.stringify(canned),
            {status: 200, headers: {"content-type": "application/json"}});
    """, answer)
    clip = corpus_dir("cremad_av") / "1001_DFA_NEU_XX.flv"
    assert upload(browser, clip) == "done"
    check_bars(browser, "fused", fused, classes)
    check_bars(browser, "audio", audio, classes)
    assert not browser.find_element(By.ID, "bars-face").is_displayed()    # null: no face view
    screenshot(browser, "demo-page-modalities")


def test_api_key_field(browser, quick_bundle):
    with running_server(quick_bundle, {"EMOTION_API_KEYS": "k-123"}) as srv:
        clip = corpus_dir("cremad_av") / "1001_DFA_SAD_XX.flv"
        open_page(browser, srv)
        browser.find_element(By.ID, "api-key").clear()
        assert upload(browser, clip) == "error"
        assert browser.find_element(By.ID, "error").get_attribute("data-code") == "unauthorized"
        browser.find_element(By.ID, "api-key").send_keys("k-123")
        assert upload(browser, clip) == "done"
        body = post(srv, clip, headers={"X-API-Key": "k-123"})
        assert browser.find_element(By.ID, "label").text.lower() == body["label"]


def test_webcam_recording(browser, server, classes):
    """Record from the (fake) webcam with MediaRecorder: the recording is sent and answered."""
    open_page(browser, server)
    browser.find_element(By.CSS_SELECTOR, "#record-seconds option[value='3']").click()
    browser.find_element(By.ID, "record").click()
    state = wait_state(browser, timeout=120)
    assert state == "done", browser.find_element(By.ID, "error").text
    raw = json.loads(browser.find_element(By.ID, "raw").get_attribute("textContent"))
    assert 2.0 <= raw["duration_s"] <= 5.0 and raw["modalities"]["audio"] in (*VOICED, "silent")
    check_bars(browser, "fused", raw["probabilities"], classes)
    screenshot(browser, "demo-page-webcam")


# --- live mode (/v1/stream) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake_devices(tmp_path_factory) -> tuple[Path, Path]:
    """A real CREMA-D clip as Chromium's fake camera (y4m) and microphone (wav); Chromium loops both."""
    import subprocess

    clip = corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"
    out = tmp_path_factory.mktemp("fake-devices")
    y4m, wav = out / "camera.y4m", out / "microphone.wav"
    for args in (["-an", "-r", "15", "-pix_fmt", "yuv420p", str(y4m)], ["-vn", "-ac", "1", "-ar", "48000", str(wav)]):
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(clip), *args], check=True,
                       timeout=60)
    return y4m, wav


@pytest.fixture
def live_browser(tmp_path, fake_devices):
    y4m, wav = fake_devices
    with chromium(tmp_path / "profile", f"--use-file-for-fake-video-capture={y4m}",
                  f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required") as driver:
        yield driver


def test_live_mode_rolling_updates_from_a_fake_camera_and_microphone(live_browser, server, classes):
    """The live page streams Chromium's fake camera and microphone (a real CREMA-D clip) to
    /v1/stream: rolling updates come, with a face found and the voice used, drawn as bars."""
    browser = live_browser
    open_page(browser, server)
    browser.find_element(By.ID, "live").click()
    body = lambda d: d.find_element(By.TAG_NAME, "body")  # noqa: E731

    def seen(d):  # one update with both: the fake microphone loops the clip, pauses included
        data = body(d)
        return int(data.get_attribute("data-live-seq") or 0) >= 6 and data.get_attribute("data-live-face") == "true" \
            and data.get_attribute("data-live-voice") == "true" \
            and all(d.find_element(By.ID, v).is_displayed() for v in ("live-audio", "live-face"))

    try:
        WebDriverWait(browser, 60, poll_frequency=0.25).until(seen)
    finally:
        screenshot(browser, "demo-page-live")
    assert body(browser).get_attribute("data-live") == "on", browser.find_element(By.ID, "live-state").text
    # read in one script: the page redraws the bars and the chart at every update
    bars, lines = browser.execute_script("""
        const bars = [...document.querySelectorAll('#live-fused .bar')].map((b) => [b.dataset.class, +b.dataset.p]);
        const lines = [...document.querySelectorAll('#live-chart polyline')].map((l) => l.dataset.class);
        return [bars, lines];""")
    assert [name for name, _ in bars] == classes
    assert abs(sum(p for _, p in bars) - 1.0) < 1e-3, "smoothed probabilities still sum to 1"
    assert sorted(lines) == sorted(classes)
    browser.find_element(By.ID, "live").click()  # stop: the page sends "end", the server closes normally
    WebDriverWait(browser, 15).until(lambda d: body(d).get_attribute("data-live") == "closed")
    summary = WebDriverWait(browser, 15).until(  # the session's summary, after "end"
        lambda d: d.find_element(By.ID, "live-state").text if d.find_element(By.ID, "live-state").text.startswith(
            "session:") else None)
    assert summary.split()[1] in (*classes, "no")
    WebDriverWait(browser, 15, poll_frequency=0.25).until(
        lambda d: 'emotion_stream_closed_total{code="1000"}' in httpx.get(server.url + "/metrics").text)
