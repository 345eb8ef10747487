"""Folder-scale jobs: inputs, the local and Ray engines, resume, fingerprints, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samkit import SamAutomaticMaskGenerator, SamPredictor, build_sam, save_checkpoint
from samkit.cli import main
from samkit.engines import JobSpec, collect, list_sources, output_relpath, run_job
from samkit.errors import InputError
from samkit.registry import build_sam_from_config

from helpers import TINY, lively_state_dict, scene

AMG = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    model = build_sam_from_config(TINY)
    model.load_state_dict(lively_state_dict(TINY, seed=5))
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("eng") / "tiny.safetensors")


@pytest.fixture(scope="module")
def spec(tiny_ckpt):
    return JobSpec(task="amg", checkpoint=str(tiny_ckpt), amg=AMG, threads=1)


def make_images(folder: Path, n: int = 6, corrupt: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sub = folder / ("sub" if i % 2 else "")
        sub.mkdir(exist_ok=True)
        Image.fromarray(scene(48, 64, seed=i)).save(sub / f"img{i}.png")
    if corrupt:
        (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "masks").rglob("*"))
            if p.is_file()}


def test_list_sources(tmp_path):
    images = make_images(tmp_path / "imgs", 4, corrupt=False)
    (images / "notes.txt").write_text("not an image")
    found = list_sources(images)
    assert len(found) == 4 and found == sorted(found)
    assert all(os.path.isabs(p) for p in found)
    assert list_sources(str(images / "**" / "*.png")) == found
    manifest = tmp_path / "list.txt"
    manifest.write_text("# two images\nimgs/img0.png\n\n" + found[1] + "\nimgs/img0.png\n")
    assert list_sources(manifest) == sorted({found[0], found[1]})
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": found[:3]}), tmp_path / "list.parquet")
    assert list_sources(tmp_path / "list.parquet") == found[:3]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_sources(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_sources(tmp_path / "empty")


def test_local_job_writes_sa1b_and_reports_failures(spec, tiny_ckpt, tmp_path):
    images = make_images(tmp_path / "imgs")
    out = tmp_path / "out"
    seen = []
    summary = run_job(images, out, spec, batch_size=4, progress=False, on_record=seen.append)
    assert summary["done"] == 6 and summary["failed"] == 1 and summary["total"] == 7
    (bad,) = summary["failures"]
    assert bad["path"].endswith("corrupt.jpg") and "not an image file" in bad["error"]
    assert len(seen) == 7
    # the output of an image is what the generator gives for it, in the SA-1B layout
    path = str((images / "img0.png").resolve())
    doc = json.loads((out / output_relpath(path)).read_text())
    assert doc["image"]["file_name"] == "img0.png" and (doc["image"]["height"],
                                                        doc["image"]["width"]) == (48, 64)
    model = build_sam(checkpoint=tiny_ckpt)
    ref = SamAutomaticMaskGenerator(model, output_mode="coco_rle", **AMG).generate(
        np.array(Image.open(path)))
    assert len(doc["annotations"]) == len(ref) > 0
    for ann, r in zip(doc["annotations"], ref):
        assert ann["segmentation"] == r["segmentation"] and ann["bbox"] == r["bbox"]
        assert ann["predicted_iou"] == pytest.approx(r["predicted_iou"])
    from pycocotools import mask as mask_utils

    assert mask_utils.decode(doc["annotations"][0]["segmentation"]).shape == (48, 64)

    # a re-run skips what is done and retries the failure; other settings are refused
    again = run_job(images, out, spec, progress=False)
    assert again["skipped_done_before"] == 6 and again["done"] == 0 and again["failed"] == 1
    other = JobSpec(task="amg", checkpoint=spec.checkpoint, amg={**AMG, "points_per_side": 8})
    with pytest.raises(InputError, match="other settings"):
        run_job(images, out, other, progress=False)


def test_collect_gathers_a_job_into_one_dataset(spec, tmp_path):
    from pycocotools.coco import COCO

    images = make_images(tmp_path / "imgs", 4)
    out = tmp_path / "out"
    run_job(images, out, spec, progress=False)
    assert main(["collect", str(out), "-o", str(tmp_path / "coco")]) == 0
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    names = sorted(im["file_name"] for im in coco.loadImgs(coco.getImgIds()))
    assert names == ["img0.png", "img2.png", "sub/img1.png", "sub/img3.png"]  # not corrupt.jpg
    for im in coco.loadImgs(coco.getImgIds()):
        doc = json.loads((out / output_relpath(str(images / im["file_name"]))).read_text())
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        assert [a["segmentation"] for a in anns] == [a["segmentation"]
                                                     for a in doc["annotations"]]
    assert main(["collect", str(out), "-o", str(tmp_path / "yolo"), "--format", "yolo"]) == 0
    assert (tmp_path / "yolo" / "labels" / "img0.txt").is_file()
    assert main(["collect", str(tmp_path / "imgs"), "-o", str(tmp_path / "x")]) == 2
    (out / output_relpath(str(images / "img2.png"))).unlink()  # a result lost after the run
    with pytest.raises(InputError, match="run the same job again"):
        collect(out, tmp_path / "lost")
    assert not (tmp_path / "lost" / "annotations.json").exists()


def test_one_job_per_folder(spec, tmp_path):
    from samkit.engines import ResultWriter

    first = ResultWriter(tmp_path / "out", spec)
    with pytest.raises(InputError, match="another samkit job"):
        ResultWriter(tmp_path / "out", spec)
    first.close()
    ResultWriter(tmp_path / "out", spec).close()  # free again


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_killed_run_resumes_without_loss_or_repeats(spec, tmp_path, engine):
    if engine == "ray":
        pytest.importorskip("ray")
    images = make_images(tmp_path / "imgs", 10, corrupt=False)
    out = tmp_path / "out"
    code = ("import sys, time\n"
            "from samkit.engines import JobSpec, run_job\n"
            f"spec = JobSpec(task='amg', checkpoint={spec.checkpoint!r}, amg={AMG!r}, threads=1)\n"
            "slow = lambda r: time.sleep(0.3)\n"
            f"run_job({str(images)!r}, {str(out)!r}, spec, engine={engine!r}, batch_size=2, "
            "progress=False, on_record=slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the job (Ray's processes follow their driver)
    proc.wait()
    before = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    assert 4 <= len(before) < 10
    summary = run_job(images, out, spec, batch_size=2, progress=False)
    assert summary["skipped_done_before"] == len(before)
    assert summary["done"] == 10 - len(before)
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == list_sources(images)  # each image done once
    assert len(outputs(out)) == 10
    assert not list(out.rglob("*.tmp"))


def test_embed_job_fills_the_studio_cache(tiny_ckpt, tmp_path):
    images = make_images(tmp_path / "imgs", 3, corrupt=False)
    project = tmp_path / "project"
    code = main(["embed", str(images), "-o", str(project), "--checkpoint", str(tiny_ckpt),
                 "--batch-size", "2"])
    assert code == 0
    from samkit.studio.launch import open_project

    proj, _ = open_project(project, checkpoint=tiny_ckpt, images_dir=images)
    rows, _ = proj.store.list_images()
    assert len(rows) == 3 and all(proj.is_cached(r["id"]) for r in rows)
    model = build_sam(checkpoint=tiny_ckpt)
    predictor = SamPredictor(model)
    for r in rows:
        emb, size, computed = proj.embedding(r["id"])
        assert not computed
        predictor.set_image(np.array(Image.open(images / r["file_name"])))
        torch.testing.assert_close(emb, predictor.get_image_embedding())
        assert tuple(size) == (48, 64)


def test_amg_cli_engine_errors(tiny_ckpt, tmp_path, capsys):
    images = make_images(tmp_path / "imgs", 1, corrupt=False)
    base = ["amg", str(images), "-o", str(tmp_path / "o"), "--checkpoint", str(tiny_ckpt)]
    assert main([*base, "--engine", "local", "--format", "yolo"]) == 2
    assert "SA-1B" in capsys.readouterr().err
    assert main([*base, "--engine", "local", "--workers", "2"]) == 2
    assert "--engine ray" in capsys.readouterr().err


# -- Ray -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from samkit.engines.ray_data import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_and_local_engines_write_the_same_bytes(ray_local, spec, tmp_path):
    images = make_images(tmp_path / "imgs", 6)
    local = run_job(images, tmp_path / "local", spec, batch_size=2, progress=False)
    ray_run = run_job(images, tmp_path / "ray", spec, engine="ray", workers=2, batch_size=2,
                      progress=False)
    assert (local["done"], local["failed"]) == (ray_run["done"], ray_run["failed"]) == (6, 1)
    assert ray_run["failures"][0]["error"] == local["failures"][0]["error"]
    a, b = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert len(a) == 6 and a == b
    again = run_job(images, tmp_path / "ray", spec, engine="ray", progress=False)
    assert again["skipped_done_before"] == 6 and again["done"] == 0


def test_ray_cli(ray_local, tiny_ckpt, tmp_path):
    images = make_images(tmp_path / "imgs", 3, corrupt=False)
    code = main(["amg", str(images), "-o", str(tmp_path / "out"), "--engine", "ray",
                 "--workers", "1", "--checkpoint", str(tiny_ckpt), "--points-per-side", "4"])
    assert code == 0
    assert len(outputs(tmp_path / "out")) == 3
    summary = json.loads((tmp_path / "out" / "last_run.json").read_text())
    assert summary["engine"] == "ray" and summary["done"] == 3


def test_missing_ray_names_the_extra(monkeypatch, spec, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    from samkit._extras import MissingExtraError

    images = make_images(tmp_path / "imgs", 1, corrupt=False)
    with pytest.raises(MissingExtraError, match=r"samkit\[ray\]"):
        run_job(images, tmp_path / "out", spec, engine="ray", progress=False)
