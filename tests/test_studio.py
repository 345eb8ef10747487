"""samkit studio: project database, embedding cache, HTTP API, exports and imports."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from samkit.ops.rle import decode_coco_rle
from samkit.registry import build_sam_from_config
from samkit.studio import Project, ProjectStore, StoreError, create_app
from samkit.studio.export import mask_to_polygons

from helpers import TINY, lively_state_dict, scene

fastapi_testclient = pytest.importorskip("fastapi.testclient")


@pytest.fixture(scope="module")
def model():
    m = build_sam_from_config(TINY)
    m.load_state_dict(lively_state_dict(TINY, seed=4))
    return m.eval()


def _images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene(120, 160, seed=1)).save(folder / "a.png")
    # stored landscape, shown portrait: EXIF orientation 6 (rotate 90 degrees clockwise)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(scene(90, 140, seed=2)).save(folder / "b.jpg", exif=exif)
    Image.fromarray(scene(100, 100, seed=3)[..., 0].astype(np.uint16) * 250).save(
        folder / "c16.png")
    (folder / "broken.png").write_bytes(b"not an image at all")


URL = "http://127.0.0.1:8765"  # what `samkit studio` serves by default


@pytest.fixture()
def client(tmp_path, model):
    _images(tmp_path / "imgs")
    project = Project(tmp_path / "proj", model, "tiny-test", images_dir=tmp_path / "imgs")
    return fastapi_testclient.TestClient(create_app(project), base_url=URL), project


def _rle(mask):
    from samkit.studio.store import mask_record

    return mask_record(mask)[0]


def test_store_schema_and_crash_safety(tmp_path):
    store = ProjectStore(tmp_path)
    assert store.schema_version == 1
    img = store.add_image("x.png", 30, 20, "abc")
    cls = store.add_class("cat")
    assert store.add_class("cat") == cls  # same name, same class
    mask = np.zeros((20, 30), bool)
    mask[5:10, 3:9] = True
    inst = store.add_instance(img, cls, mask, score=0.9, source="click")
    # committed at once: a second connection (as after a crash and restart) sees it
    again = ProjectStore(tmp_path)
    got = again.get_instance(inst.id)
    assert got.bbox == (3, 5, 6, 5) and got.area == 30
    assert np.array_equal(got.mask(20, 30), mask)
    assert again.get_image(img)["status"] == "in_progress"
    with pytest.raises(StoreError, match="empty"):
        store.add_instance(img, cls, np.zeros((20, 30), bool))
    with pytest.raises(StoreError, match="does not match"):
        store.add_instance(img, cls, np.ones((21, 30), bool))
    with pytest.raises(StoreError, match="no class"):
        store.add_instance(img, 99, mask)
    with pytest.raises(StoreError, match="status must be"):
        store.set_status(img, "finished")
    # a database from a newer samkit is refused with a clear message
    db = sqlite3.connect(tmp_path / "samkit_project.sqlite")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer than this samkit"):
        ProjectStore(tmp_path)


def test_concurrent_writers_never_corrupt(tmp_path):
    store = ProjectStore(tmp_path)
    img = store.add_image("x.png", 16, 16, "abc")
    cls = store.add_class("a")
    errors = []

    def work(k):
        try:
            s = ProjectStore(tmp_path)  # as a second tab / thread would
            for i in range(15):
                m = np.zeros((16, 16), bool)
                m[k, i] = True
                s.add_instance(img, cls, m)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    insts = store.instances(img)
    assert len(insts) == 60 and len({i.rle for i in insts}) == 60


def test_images_listed_with_errors_and_exif(client):
    c, _project = client
    r = c.get("/api/images")
    assert r.status_code == 200
    rows = {row["file_name"]: row for row in r.json()["images"]}
    assert set(rows) == {"a.png", "b.jpg", "c16.png", "broken.png"}
    assert rows["broken.png"]["error"] and rows["a.png"]["error"] is None
    assert (rows["b.jpg"]["width"], rows["b.jpg"]["height"]) == (90, 140)  # EXIF applied
    assert c.get("/api/images", params={"status": "error"}).json()["total"] == 1
    shown = Image.open(io.BytesIO(c.get(f"/api/images/{rows['b.jpg']['id']}/file").content))
    assert shown.size == (90, 140)
    bad = c.get(f"/api/images/{rows['broken.png']['id']}/file")
    assert bad.status_code == 400 and "could not be read" in bad.json()["detail"]
    assert c.get("/api/images/999").status_code == 404
    assert c.get("/api/images", params={"status": "nope"}).status_code == 400


def test_click_predict_refine_accept_edit_delete(client, model):
    from samkit.predictor import SamPredictor

    c, project = client
    img_id = project.store.image_by_name("a.png")["id"]
    r = c.post(f"/api/images/{img_id}/embed")
    assert r.json()["computed"] is True
    assert c.post(f"/api/images/{img_id}/embed").json()["computed"] is False
    # the cache is keyed by content hash and model id, on disk
    sha = project.store.get_image(img_id)["sha256"]
    assert (project.dir / ".samkit" / "embeddings" / "tiny-test" / f"{sha}.pt").exists()

    r = c.post(f"/api/images/{img_id}/predict", json={"points": [[60, 50, 1]]})
    assert r.status_code == 200, r.text
    cands = r.json()["candidates"]
    assert len(cands) == 3 and cands[0]["score"] >= cands[-1]["score"]
    # same masks as the predictor used directly on the image
    p = SamPredictor(model)
    p.set_image(scene(120, 160, seed=1))
    masks, scores, _ = p.predict(point_coords=np.array([[60, 50]]), point_labels=np.array([1]))
    best = masks[int(np.argmax(scores))]
    assert np.array_equal(decode_coco_rle({"size": [120, 160], "counts": cands[0]["rle"]}), best)

    refine = c.post(f"/api/images/{img_id}/predict", json={
        "points": [[60, 50, 1], [20, 20, 0]], "logits_id": cands[0]["logits_id"],
        "multimask": False})
    assert refine.status_code == 200 and len(refine.json()["candidates"]) == 1
    other = project.store.image_by_name("c16.png")["id"]
    stale = c.post(f"/api/images/{other}/predict",
                   json={"points": [[5, 5, 1]], "logits_id": cands[0]["logits_id"]})
    assert stale.status_code == 400 and "logits_id" in stale.json()["detail"]

    cls = c.post("/api/classes", json={"name": "blob"}).json()
    acc = c.post(f"/api/images/{img_id}/instances",
                 json={"rle": cands[0]["rle"], "class_id": cls["id"], "score": 0.5})
    assert acc.status_code == 201
    inst = acc.json()
    assert inst["area"] == int(best.sum())
    cls2 = c.post("/api/classes", json={"name": "other"}).json()
    assert c.patch(f"/api/instances/{inst['id']}",
                   json={"class_id": cls2["id"]}).json()["class_id"] == cls2["id"]
    smaller = best.copy()
    smaller[:, :80] = False
    if smaller.any():
        edited = c.patch(f"/api/instances/{inst['id']}", json={"rle": _rle(smaller)}).json()
        assert edited["area"] == int(smaller.sum())
    assert len(c.get(f"/api/images/{img_id}/instances").json()) == 1
    assert c.delete(f"/api/instances/{inst['id']}").status_code == 200
    assert c.get(f"/api/images/{img_id}/instances").json() == []
    assert c.delete(f"/api/instances/{inst['id']}").status_code == 404
    assert c.post(f"/api/images/{img_id}/status", json={"status": "done"}).json()[
        "status"] == "done"


@pytest.mark.parametrize("body, status", [
    ({"points": [[1, 2]]}, 422),                    # a point without a label
    ({"box": [1, 2, 3]}, 422),                      # three numbers for a box
    ({}, 400),                                      # nothing to segment
    ({"points": [[1, 2, 1]], "logits_id": "zzz"}, 400),
    ({"points": [[1, 2, 7]]}, 400),                 # a label that is neither 0 nor 1
    ({"box": [50, 50, 10, 10]}, 400),               # x1 < x0
])
def test_bad_prompts_get_clear_errors(client, body, status):
    c, project = client
    img_id = project.store.image_by_name("a.png")["id"]
    r = c.post(f"/api/images/{img_id}/predict", json=body)
    assert r.status_code == status
    assert r.json()["detail"]


def test_bad_instances_and_classes(client):
    c, project = client
    img_id = project.store.image_by_name("a.png")["id"]
    assert c.post(f"/api/images/{img_id}/instances",
                  json={"rle": "!!garbage", "class_id": 1}).status_code == 400
    cls = c.post("/api/classes", json={"name": "x"}).json()
    wrong_size = _rle(np.ones((10, 10), bool))
    r = c.post(f"/api/images/{img_id}/instances", json={"rle": wrong_size, "class_id": cls["id"]})
    assert r.status_code == 400
    assert c.post("/api/classes", json={"name": "y", "color": "red"}).status_code == 422
    assert c.post("/api/classes", json={"name": "  "}).status_code == 400


def test_uploads_are_validated(client):
    c, project = client
    png = io.BytesIO()
    Image.fromarray(scene(40, 50, seed=5)).save(png, format="PNG")
    r = c.post("/api/images", files={"file": ("../../escape.png", png.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["file_name"] == "escape.png"
    assert (project.images_dir / "escape.png").exists()
    assert not (project.dir.parent / "escape.png").exists()
    r = c.post("/api/images", files={"file": ("x.png", b"\x89PNG junk", "image/png")})
    assert r.status_code == 400 and "not a readable image" in r.json()["detail"]
    r = c.post("/api/images", files={"file": ("x.exe", png.getvalue(), "image/png")})
    assert r.status_code == 400


def test_token_required_when_set(tmp_path, model):
    _images(tmp_path / "imgs")
    project = Project(tmp_path / "p", model, "tiny-test", images_dir=tmp_path / "imgs")
    c = fastapi_testclient.TestClient(create_app(project, token="s3cret"), base_url=URL)
    assert c.get("/api/info").status_code == 401
    assert c.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/api/info", params={"token": "s3cret"}).status_code == 200
    assert c.get("/api/info").status_code == 200  # the cookie set by ?token= carries on


def _annotate(c, project):
    """Two instances on a.png (one with a hole, one in two parts), one on c16.png."""
    cls = c.post("/api/classes", json={"name": "ring"}).json()["id"]
    cls2 = c.post("/api/classes", json={"name": "pair"}).json()["id"]
    a = project.store.image_by_name("a.png")["id"]
    ring = np.zeros((120, 160), bool)
    ring[20:70, 30:90] = True
    ring[35:55, 45:70] = False
    pair = np.zeros((120, 160), bool)
    pair[80:100, 10:30] = True
    pair[85:110, 100:150] = True
    for m, k in ((ring, cls), (pair, cls2)):
        assert c.post(f"/api/images/{a}/instances",
                      json={"rle": _rle(m), "class_id": k}).status_code == 201
    c16 = project.store.image_by_name("c16.png")["id"]
    sq = np.zeros((100, 100), bool)
    sq[10:40, 50:90] = True
    c.post(f"/api/images/{c16}/instances", json={"rle": _rle(sq), "class_id": cls})
    return {"ring": ring, "pair": pair, "square": sq}


def test_export_import_export_is_identical(client, tmp_path, model):
    c, project = client
    _annotate(c, project)
    first = c.get("/api/export", params={"format": "coco"})
    assert first.status_code == 200
    coco = first.json()
    assert len(coco["annotations"]) == 3 and {x["name"] for x in coco["categories"]} == {
        "ring", "pair"}
    # a fresh project over the same images continues from the export
    other = Project(tmp_path / "proj2", model, "tiny-test", images_dir=tmp_path / "imgs")
    c2 = fastapi_testclient.TestClient(create_app(other), base_url=URL)
    r = c2.post("/api/import", files={"file": ("a.json", json.dumps(coco).encode(), "x")})
    assert r.json()["imported"] == 3, r.json()
    second = c2.get("/api/export", params={"format": "coco"}).json()

    def masks(d):
        names = {im["id"]: im["file_name"] for im in d["images"]}
        cats = {k["id"]: k["name"] for k in d["categories"]}
        return sorted((names[a["image_id"]], cats[a["category_id"]], a["segmentation"]["counts"])
                      for a in d["annotations"])

    assert masks(coco) == masks(second)
    bad = c2.post("/api/import", files={"file": ("a.json", b"{not json", "x")})
    assert bad.status_code == 400 and "not JSON" in bad.json()["detail"]


def test_polygon_yolo_png_labelme_exports(client):
    from pycocotools import mask as mask_utils

    c, project = client
    truth = _annotate(c, project)
    z = zipfile.ZipFile(io.BytesIO(c.get("/api/export", params={"format": "coco_polygons"})
                                   .content))
    coco = json.loads(z.read("annotations.json"))
    by_area = sorted(coco["annotations"], key=lambda a: a["area"])
    for ann in coco["annotations"]:
        im = next(i for i in coco["images"] if i["id"] == ann["image_id"])
        rles = mask_utils.frPyObjects(ann["segmentation"], im["height"], im["width"])
        m = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        gt = next(t for t in truth.values() if t.shape == m.shape and t.sum() == ann["area"])
        assert (m & gt).sum() / (m | gt).sum() > 0.93
        if gt is truth["ring"]:
            assert not m[40:50, 50:65].any()  # the hole stays a hole
    assert len(by_area) == 3
    assert len(mask_to_polygons(truth["pair"])) == 2  # two parts, two polygons

    z = zipfile.ZipFile(io.BytesIO(c.get("/api/export", params={"format": "yolo"}).content))
    assert z.read("classes.txt").decode().split() == ["ring", "pair"]
    lines = z.read("labels/a.txt").decode().splitlines()
    assert len(lines) == 2 and all(0 <= float(v) <= 1 for v in lines[0].split()[1:])

    z = zipfile.ZipFile(io.BytesIO(c.get("/api/export", params={"format": "png"}).content))
    inst = np.array(Image.open(io.BytesIO(z.read("instances/a.png"))))
    assert np.array_equal(inst == 1, truth["ring"]) and np.array_equal(inst == 2, truth["pair"])
    sem = np.array(Image.open(io.BytesIO(z.read("semantic/a.png"))))
    assert set(np.unique(sem)) == {0, 1, 2}

    z = zipfile.ZipFile(io.BytesIO(c.get("/api/export", params={"format": "labelme"}).content))
    lm = json.loads(z.read("a.json"))
    assert [s["label"] for s in lm["shapes"]] == ["ring", "pair"]
    import base64

    shape = lm["shapes"][0]
    crop = np.array(Image.open(io.BytesIO(base64.b64decode(shape["mask"])))) > 0
    (x0, y0), (x1, y1) = shape["points"]
    assert np.array_equal(crop, truth["ring"][y0: y1 + 1, x0: x1 + 1])
    assert c.get("/api/export", params={"format": "pdf"}).status_code == 400


def test_precompute_worker_and_auto(client):
    c, project = client
    r = c.post("/api/embeddings/precompute").json()
    assert r["queued"] == 3  # the unreadable image is not queued
    project.worker.wait(120)
    status = c.get("/api/embeddings").json()
    assert status["done"] == 3 and not status["errors"]
    assert all(row["cached"] for row in c.get("/api/images").json()["images"]
               if row["error"] is None)
    a = project.store.image_by_name("a.png")["id"]
    auto = c.post(f"/api/images/{a}/auto", json={"points_per_side": 4, "pred_iou_thresh": 0,
                                                  "stability_score_thresh": 0}).json()
    assert auto["masks"] and all(m["size"] == [120, 160] for m in auto["masks"])


def test_cli_demo_precompute_and_host_token(tmp_path, capsys):
    from samkit.cli import main
    from samkit.studio.launch import check_host

    assert main(["studio", "precompute", str(tmp_path / "demo"), "--demo"]) == 0
    out = capsys.readouterr().out
    assert "cached 8 embedding(s)" in out
    store = ProjectStore(tmp_path / "demo")
    assert store.counts()["todo"] == 8
    # a second run finds everything cached
    assert main(["studio", "precompute", str(tmp_path / "demo")]) == 0
    assert "cached 0 embedding(s)" in capsys.readouterr().out
    assert main(["studio"]) == 2  # no project given
    assert "PROJECT_DIR" in capsys.readouterr().err
    assert main(["studio", str(tmp_path / "p"), "--images", str(tmp_path / "nope")]) == 2
    assert check_host("127.0.0.1", None) is None and check_host("localhost", None) is None
    assert check_host("0.0.0.0", None) and check_host("192.168.1.5", None)
    assert check_host("0.0.0.0", "mine") == "mine"


def test_classes_navigation_and_page(client):
    c, _project = client
    a = c.post("/api/classes", json={"name": "cat"}).json()
    b = c.post("/api/classes", json={"name": "dog", "color": "#00ff00"}).json()
    assert [x["name"] for x in c.get("/api/classes").json()] == ["cat", "dog"]
    assert b["color"] == "#00ff00" and a["color"].startswith("#")
    assert c.patch(f"/api/classes/{a['id']}", json={"name": "kitten"}).json()["name"] == "kitten"
    clash = c.patch(f"/api/classes/{a['id']}", json={"name": "dog"})
    assert clash.status_code == 400 and "exists" in clash.json()["detail"]
    assert c.patch("/api/classes/99", json={"name": "x"}).status_code == 404
    ids = [r["id"] for r in c.get("/api/images").json()["images"]]
    first = c.get(f"/api/images/{ids[0]}").json()
    assert first["previous"] is None and first["next"] == ids[1]
    last = c.get(f"/api/images/{ids[-1]}").json()
    assert last["next"] is None and last["previous"] == ids[-2]
    c.post(f"/api/images/{ids[0]}/status", json={"status": "done"})
    assert [r["id"] for r in c.get("/api/images", params={"status": "done"}).json()[
        "images"]] == [ids[0]]
    assert c.get("/api/images", params={"search": "c16"}).json()["total"] == 1
    assert c.post(f"/api/images/{ids[0]}/status", json={"status": "x"}).status_code == 400
    page = c.get("/")
    assert page.status_code == 200 and "samkit studio" in page.text
    asset = page.text.split('src="./assets/')[1].split('"')[0]
    assert c.get(f"/assets/{asset}").status_code == 200
    assert c.get("/assets/../../store.py").status_code == 404


def test_dns_rebinding_host_is_refused(client):
    c, _ = client
    assert c.get("/api/info").status_code == 200
    assert c.get("/api/info", headers={"Host": "localhost:8765"}).status_code == 200
    assert c.get("/api/info", headers={"Host": "[::1]:8765"}).status_code == 200
    # a page at evil.example whose name now resolves to 127.0.0.1 reads nothing
    r = c.get("/api/images", headers={"Host": "evil.example:8765"})
    assert r.status_code == 403 and "--allow-host" in r.json()["detail"]
    r = c.post("/api/classes", json={"name": "rebound"}, headers={"Host": "evil.example:8765"})
    assert r.status_code == 403
    assert "rebound" not in [k["name"] for k in c.get("/api/classes").json()]


def test_cross_origin_writes_are_refused(client):
    c, _ = client
    png = io.BytesIO()
    Image.fromarray(scene(40, 50, seed=9)).save(png, format="PNG")
    n = c.get("/api/images").json()["total"]
    evil = {"Origin": "http://evil.example"}
    # a "simple" cross-site multipart post (no preflight): refused, nothing added
    r = c.post("/api/images", files={"file": ("x.png", png.getvalue(), "image/png")},
               headers=evil)
    assert r.status_code == 403 and c.get("/api/images").json()["total"] == n
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    r = c.post("/api/import", files={"file": ("a.json", json.dumps(coco).encode(), "x")},
               headers=evil)
    assert r.status_code == 403
    assert c.post("/api/classes", json={"name": "evil"}, headers=evil).status_code == 403
    assert c.post("/api/classes", json={"name": "evil"},
                  headers={"Origin": "null"}).status_code == 403
    assert c.post("/api/classes", json={"name": "evil"},
                  headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert "evil" not in [k["name"] for k in c.get("/api/classes").json()]
    # the studio's own page (same origin) and clients without Origin (scripts) still work
    ok = {"Origin": URL, "Sec-Fetch-Site": "same-origin"}
    assert c.post("/api/classes", json={"name": "mine"}, headers=ok).status_code == 201
    r = c.post("/api/images", files={"file": ("x.png", png.getvalue(), "image/png")})
    assert r.status_code in (200, 201) and c.get("/api/images").json()["total"] == n + 1
    # reading from another origin is left to the browser's same-origin policy: no CORS
    r = c.get("/api/info", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_allowed_hosts_follow_the_listen_address(tmp_path, model):
    from samkit.studio.launch import allowed_hosts

    assert allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "::1", "127.0.0.1"]
    assert "box.lan" in allowed_hosts("192.168.1.5", ["box.lan"])
    assert allowed_hosts("0.0.0.0") is None
    _images(tmp_path / "imgs")
    project = Project(tmp_path / "p", model, "tiny-test", images_dir=tmp_path / "imgs")
    with pytest.raises(ValueError, match="needs a token"):
        create_app(project, allowed_hosts=None)
    c = fastapi_testclient.TestClient(create_app(project, token="t", allowed_hosts=None),
                                      base_url="http://box.lan:8765")
    assert c.get("/api/info", headers={"X-Samkit-Token": "t"}).status_code == 200


def test_user_errors_answer_400_and_bugs_500(tmp_path, model, monkeypatch):
    _images(tmp_path / "imgs")
    project = Project(tmp_path / "p", model, "tiny-test", images_dir=tmp_path / "imgs")
    c = fastapi_testclient.TestClient(create_app(project), base_url=URL,
                                      raise_server_exceptions=False)
    a = project.store.image_by_name("a.png")["id"]
    r = c.post(f"/api/images/{a}/predict", json={"points": [[10, 10, 7]]})
    assert r.status_code == 400 and "point_labels must be 1" in r.json()["detail"]

    def broken(*args, **kwargs):
        raise ValueError("a library bug that happens to be a ValueError")

    monkeypatch.setattr(Project, "predict", broken)
    r = c.post(f"/api/images/{a}/predict", json={"points": [[10, 10, 1]]})
    assert r.status_code == 500 and r.json()["detail"].startswith("internal error")
