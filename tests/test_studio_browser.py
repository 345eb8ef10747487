"""End to end in a real browser: Playwright drives Debian's chromium against a live server.

Opens a project, clicks an object, sees the mask drawn, accepts it with a class, exports COCO
from the page and checks the file, and saves a screenshot (``STUDIO_SCREENSHOT`` or the test's
tmp dir). Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright``
package; ``.ci/run`` installs both, so under CI a missing browser fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
UI = Path(__file__).parents[1] / "src" / "samkit" / "studio" / "ui" / "index.html"
if not (os.environ.get("CI") or Path(CHROMIUM).exists()):
    pytest.skip("no chromium here (CI installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    from samkit.data.synthetic import make_scene
    from samkit.studio.launch import open_project
    from samkit.studio.server import create_app

    images = tmp_path / "images"
    images.mkdir()
    scene = make_scene("test", 5000, size=(300, 400), max_objects=4, min_objects=2,
                       radius_range=(0.15, 0.3))
    Image.fromarray(scene.image).save(images / "scene.png")
    project, amg = open_project(tmp_path / "project", "nano", images_dir=images)
    # the object to click: the largest instance, at its interior point
    from samkit.eval.prompts import interior_point

    target = max(scene.instances, key=lambda i: i.mask.sum()).mask
    x, y = interior_point(target)
    with _serving(create_app(project, amg_defaults=amg)) as url:
        yield url, project, (int(x), int(y))


@contextlib.contextmanager
def _serving(app):
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "the studio server did not start"
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.should_exit = True
        thread.join(10)


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"])


def test_click_accept_export_in_browser(server, tmp_path):
    assert UI.exists(), "build the UI: cd studio-ui && npm ci && npm run build"
    url, project, (px, py) = server
    shot = Path(os.environ.get("STUDIO_SCREENSHOT", tmp_path / "studio.png"))
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 850}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("body[data-ready]", timeout=30_000)
        assert page.locator("#image-list li").count() == 1
        assert page.locator("#project").inner_text().endswith("· 0 instances")
        assert page.locator("#shortcuts dt").count() >= 8  # shortcuts are shown

        page.fill("#class-name", "thing")
        page.click("#class-form button")
        page.wait_for_function("document.querySelector('#class-select').options.length === 1")

        # image pixel -> page position, with the page's own fit-to-view rule
        box = page.locator("#canvas").bounding_box()
        scale = min(box["width"] / 400, box["height"] / 300) * 0.96

        def to_page(x, y):
            return (box["x"] + (box["width"] - 400 * scale) / 2 + (x + 0.5) * scale,
                    box["y"] + (box["height"] - 300 * scale) / 2 + (y + 0.5) * scale)

        # a grid of image pixels, read off the canvas before and after the click
        gy, gx = np.mgrid[4:300:8, 4:400:8]
        probes = [to_page(x, y) for x, y in zip(gx.ravel(), gy.ravel())]
        read = """(pts) => { const c = document.getElementById('canvas');
            const r = c.getBoundingClientRect(); const d = devicePixelRatio || 1;
            const g = c.getContext('2d');
            return pts.map(([x, y]) => Array.from(g.getImageData(
                Math.floor((x - r.left) * d), Math.floor((y - r.top) * d), 1, 1).data)); }"""
        before = np.array(page.evaluate(read, probes), float)
        page.mouse.click(*to_page(px, py))
        page.wait_for_selector("#candidates .cand", timeout=30_000)
        assert page.locator("#candidates .cand").count() == 3
        page.screenshot(path=str(shot))
        after = np.array(page.evaluate(read, probes), float)
        page.keyboard.press("Enter")
        page.wait_for_selector("#instances li", timeout=30_000)
        assert page.locator("#instances li select").input_value() == "1"
        # the header's project count follows the accept without a reload
        page.wait_for_function(
            "document.getElementById('project').textContent.endsWith('· 1 instances')",
            timeout=10_000)

        with page.expect_download() as dl:
            page.click("#export-coco")
        coco = json.loads(Path(dl.value.path()).read_text())
        browser.close()
    assert not errors, errors
    assert [c["name"] for c in coco["categories"]] == ["thing"]
    (ann,) = coco["annotations"]
    from samkit.ops.rle import decode_coco_rle

    mask = decode_coco_rle(ann["segmentation"])
    assert mask.shape == (300, 400) and mask[py, px] and ann["area"] == int(mask.sum())
    assert np.array_equal(project.store.instances()[0].mask(300, 400), mask)
    assert shot.exists() and shot.stat().st_size > 10_000
    # the drawn mask is the accepted one: its pixels turned towards the overlay's blue
    # (#1e90ff), the others kept their colour (the click marker's pixels excepted)
    bluer = (after[:, 2] - after[:, 0]) - (before[:, 2] - before[:, 0])
    inside = mask[gy.ravel(), gx.ravel()]
    marker = (gx.ravel() - px) ** 2 + (gy.ravel() - py) ** 2 <= 6**2
    assert inside.sum() >= 3, "the accepted mask covers almost none of the probe grid"
    assert (bluer[inside & ~marker] > 15).mean() > 0.9
    assert np.abs(after - before)[~inside & ~marker].max(axis=1).mean() < 1.0


def test_find_by_name_then_accept_in_browser(tmp_path):
    """The find box: type a class name, see its candidates, accept one with its class."""
    from samkit.pipelines import AutoLabeler, Detections
    from samkit.studio.launch import open_project
    from samkit.studio.server import create_app

    images = tmp_path / "images"
    images.mkdir()
    img = np.full((240, 320, 3), 120, np.uint8)
    img[60:140, 40:120] = (220, 30, 30)
    img[100:200, 180:280] = (30, 40, 210)
    Image.fromarray(img).save(images / "shapes.png")
    truth = {"red square": (40, 60, 120, 140), "blue square": (180, 100, 280, 200)}

    class KnownBoxes:  # a detector that knows where the squares are
        def detect(self, image, classes, *args):
            rows = [(truth[c], 0.9, i) for i, c in enumerate(classes) if c in truth]
            if not rows:
                return Detections.empty(classes)
            boxes, scores, ids = zip(*rows)
            return Detections(np.array(boxes), np.array(scores), np.array(ids), classes)

    project, amg = open_project(tmp_path / "project", "nano", images_dir=images)
    project.labeler = AutoLabeler(project.predictor, detector=KnownBoxes())
    with _serving(create_app(project, amg_defaults=amg)) as url, \
            sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 850})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("body[data-ready]", timeout=30_000)
        assert page.locator("#find-form").is_visible()
        page.fill("#find-text", "blue square, cat")
        page.click("#find")
        page.wait_for_selector("#auto-list li", timeout=30_000)
        assert page.locator("#auto-title").text_content() == "found"
        assert page.locator("#auto-list li").count() == 1
        assert page.locator("#auto-list li").inner_text().startswith("blue square 0.90")
        page.click("#auto-list li button[title='accept as blue square']")
        page.wait_for_selector("#instances li", timeout=30_000)
        page.wait_for_function("[...document.querySelectorAll('#class-select option')]"
                               ".some(o => o.textContent === 'blue square')", timeout=10_000)
        shot = Path(os.environ.get("STUDIO_FIND_SCREENSHOT", tmp_path / "find.png"))
        page.screenshot(path=str(shot))
        browser.close()
    assert not errors, errors
    (inst,) = project.store.instances()
    classes = {c["id"]: c["name"] for c in project.store.list_classes()}
    assert classes[inst.class_id] == "blue square" and inst.source == "find"
    mask = inst.mask(240, 320)
    square = np.zeros((240, 320), bool)
    square[100:200, 180:280] = True
    assert (mask & square).sum() / (mask | square).sum() > 0.8
