"""`llmseg app` end to end in a real headless Chromium (Debian's, driven by playwright-core from npm).

The page is served by the real command (`python -m llmseg.cli app`, demo CLIP, no arguments but a port and
a cache folder); the browser uploads a demo scene, types the classes, picks the curated label set and presses
Segment; the legend must list the classes, and the label PNG it downloads must equal `Segmenter` on the
same inputs. Then a repeated class must be reported on the page. The page must fetch nothing off this host.

Skipped only when Chromium is absent. `LLMSEG_APP_SCREENSHOT=docs/images/app.png` also saves the page
(how the README picture is made).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import DEMO_CLASSES

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _playwright_core() -> None:
    """Install the pinned playwright-core next to the driver (once; node_modules is git-ignored)."""
    if (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    assert npm, "the browser test needs node and npm (to install playwright-core)"
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, check=True, timeout=300)


def _wait_until_serving(process: subprocess.Popen, url: str, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llmseg app exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"llmseg app did not serve {url} within {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The running app's URL (stopped after the module)."""
    folder = tmp_path_factory.mktemp("served")
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(folder / "gradio"),
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = folder / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmseg.cli", "app", "--port", str(port), "--cache-dir", str(folder / "cache")],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(process, url, log)
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium); .ci/run installs it")
def test_page_segments_an_upload_like_segmenter(served, scene_png, reference_segmenter, curated_label_set):
    _playwright_core()
    url, log = served
    options = {
        "url": url,
        "image": scene_png,
        "classes": DEMO_CLASSES,
        "label_set": json.dumps(curated_label_set, indent=1),
        "bad_classes": "background, cat, cat",
        "chromium": CHROMIUM,
        "timeout_ms": 120000,
    }
    if os.environ.get("LLMSEG_APP_SCREENSHOT"):
        options["screenshot"] = str(Path(os.environ["LLMSEG_APP_SCREENSHOT"]).resolve())
    node = shutil.which("node")
    assert node, "the browser test needs node"
    done = subprocess.run([node, "drive.mjs", json.dumps(options)], cwd=BROWSER_DIR, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, f"driver failed:\n{done.stdout}\n{done.stderr}\napp log:\n{log.read_text()}"
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    print("browser timings (s):", seen["timings"])

    expected = reference_segmenter(np.asarray(Image.open(scene_png).convert("RGB")), classes=DEMO_CLASSES,
                                   label_set=curated_label_set)
    assert "Segmented scene_7.png" in seen["message"] and "the label set" in seen["message"]
    assert sorted(row["name"] for row in seen["legend"]) == sorted(DEMO_CLASSES.split(", "))
    shares = {e["name"]: f"{100 * e['pixel_share']:.1f}%" for e in expected.summary()["present"]}
    for row in seen["legend"]:
        assert row["share"] == shares.get(row["name"], "0.0%"), row

    links = {Path(d["href"].split("file=", 1)[-1]).name: d["href"] for d in seen["downloads"]}
    assert set(links) == {"scene_7.png", "scene_7.json"}, links
    with urllib.request.urlopen(links["scene_7.png"], timeout=30) as response:
        label_png = Image.open(BytesIO(response.read()))
        label_png.load()
    assert label_png.mode == "P"
    np.testing.assert_array_equal(np.asarray(label_png).astype(np.int64), expected.labels)
    with urllib.request.urlopen(links["scene_7.json"], timeout=30) as response:
        assert json.loads(response.read()) == json.loads(json.dumps(expected.summary()))

    assert "'cat' is given twice" in seen["error"]
    assert seen["external"] == [], f"the page fetched from other hosts: {seen['external']}"
