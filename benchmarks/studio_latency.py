"""samkit studio latency against a running server (real HTTP on 127.0.0.1).

    python3 benchmarks/studio_latency.py [--clicks 60] [--instances 10000] [--skip-vit-b]

Measures, per model (bundled nano; ViT-B with random weights, same cost as the real one):
- click -> mask round trip (POST predict, embedding cached), p50 / p95 over random clicks
- opening an image whose embedding is cached on disk but not in memory: image details + the
  image file + embedding load + the first click answered
and, on a project holding ``--instances`` instances: the full image list and the COCO export.
Writes ``benchmarks/results/studio_latency.json``. Targets (issue #5): p50 < 100 ms and
p95 < 200 ms, open < 300 ms, list and export < 2 s each.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).parent / "results" / "studio_latency.json"


def _serve(project, amg=None):
    import uvicorn

    from samkit.studio.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(project, amg_defaults=amg),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def _images(folder: Path, n: int, size: tuple[int, int]) -> None:
    from samkit.data.synthetic import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(make_scene("test", 7000 + i, size=size).image).save(folder / f"{i}.png")


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e3, q))


def bench_model(name: str, model, model_id: str, root: Path, clicks: int) -> dict:
    import httpx

    from samkit.studio.project import Project

    images = root / f"images-{name}"
    _images(images, 10, (768, 1024))
    project = Project(root / f"project-{name}", model, model_id, images_dir=images)
    project.worker.enqueue_missing()
    project.worker.wait(3600)
    url, server, thread = _serve(project)
    rng = np.random.default_rng(0)
    with httpx.Client(base_url=url, timeout=120) as c:
        c.post("/api/images/1/predict", json={"points": [[10, 10, 1]]})  # warm-up
        times = []
        for _ in range(clicks):
            pt = [float(rng.uniform(0, 1024)), float(rng.uniform(0, 768)), 1]
            t = time.perf_counter()
            r = c.post("/api/images/1/predict", json={"points": [pt]})
            times.append(time.perf_counter() - t)
            r.raise_for_status()
        opens = []
        for image_id in range(2, 11):
            project.embeddings.forget_memory()  # on disk, not in memory: as after a restart
            t = time.perf_counter()
            c.get(f"/api/images/{image_id}").raise_for_status()
            c.get(f"/api/images/{image_id}/file").raise_for_status()
            c.post(f"/api/images/{image_id}/embed").raise_for_status()
            c.post(f"/api/images/{image_id}/predict",
                   json={"points": [[500, 400, 1]]}).raise_for_status()
            opens.append(time.perf_counter() - t)
    server.should_exit = True
    thread.join(10)
    return {"click_p50_ms": _pct(times, 50), "click_p95_ms": _pct(times, 95),
            "open_cached_p50_ms": _pct(opens, 50), "open_cached_max_ms": _pct(opens, 100),
            "clicks": clicks, "image_size": [768, 1024]}


def bench_big_project(model, root: Path, n_instances: int) -> dict:
    import httpx

    from samkit.studio.project import Project

    images = root / "images-big"
    images.mkdir()
    n_images = max(1, n_instances // 50)
    for i in range(n_images):  # small flat images: the database is what is measured
        Image.fromarray(np.full((480, 640, 3), i % 255, np.uint8)).save(images / f"{i}.png")
    project = Project(root / "project-big", model, "nano-bench", images_dir=images)
    store = project.store
    cls = [store.add_class(n) for n in ("a", "b", "c")]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for k in range(n_instances):
        m = np.zeros((480, 640), bool)
        y, x = rng.integers(0, 400), rng.integers(0, 560)
        m[y: y + rng.integers(5, 80), x: x + rng.integers(5, 80)] = True
        store.add_instance(1 + k % n_images, cls[k % 3], m, score=0.9, source="api")
    fill_s = time.perf_counter() - t
    url, server, thread = _serve(project)
    with httpx.Client(base_url=url, timeout=120) as c:
        list_t, export_t = [], []
        for _ in range(3):
            t = time.perf_counter()
            r = c.get("/api/images", params={"limit": 10000})
            list_t.append(time.perf_counter() - t)
            assert r.json()["total"] == n_images
            t = time.perf_counter()
            r = c.get("/api/export", params={"format": "coco"})
            export_t.append(time.perf_counter() - t)
            assert len(r.json()["annotations"]) == n_instances
    server.should_exit = True
    thread.join(10)
    return {"instances": n_instances, "images": n_images, "fill_s": round(fill_s, 1),
            "image_list_s": float(np.median(list_t)), "coco_export_s": float(np.median(export_t)),
            "export_bytes": len(r.content)}


def main() -> int:
    from samkit.registry import MODELS, build_sam
    from samkit.studio.project import model_id_for

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clicks", type=int, default=60)
    ap.add_argument("--instances", type=int, default=10000)
    ap.add_argument("--skip-vit-b", action="store_true")
    args = ap.parse_args()
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, "
                               f"{torch.get_num_threads()} threads", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nano = build_sam("nano")
        nano_id = model_id_for("nano", MODELS["nano"].weights.bundled_path())
        report["models"]["nano"] = bench_model("nano", nano, nano_id, root, args.clicks)
        print("nano", report["models"]["nano"], flush=True)
        if not args.skip_vit_b:
            torch.manual_seed(0)
            vit_b = build_sam("vit_b")  # random weights: the same cost as the real ones
            report["models"]["vit_b"] = bench_model("vit_b", vit_b, "vit_b-random", root,
                                                    args.clicks)
            print("vit_b", report["models"]["vit_b"], flush=True)
        report["big_project"] = bench_big_project(nano, root, args.instances)
        print("big project", report["big_project"], flush=True)
    targets = []
    for name, r in report["models"].items():
        targets += [(f"{name} click p50 < 100 ms", r["click_p50_ms"] < 100),
                    (f"{name} click p95 < 200 ms", r["click_p95_ms"] < 200),
                    (f"{name} open cached image < 300 ms (p50)", r["open_cached_p50_ms"] < 300)]
    big = report["big_project"]
    targets += [("image list < 2 s", big["image_list_s"] < 2),
                ("COCO export < 2 s", big["coco_export_s"] < 2)]
    report["targets"] = {k: bool(v) for k, v in targets}
    for k, v in targets:
        print(f"{'met   ' if v else 'MISSED'} {k}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
