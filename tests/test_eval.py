"""Evaluation: prompt placement and mIoU by prompt type on a tiny COCO set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samkit import save_checkpoint
from samkit.cli import main
from samkit.data.coco import write_synthetic_coco
from samkit.eval.evaluate import evaluate, iou
from samkit.eval.prompts import interior_point, next_click
from samkit.registry import build_sam_from_config

from helpers import TINY, lively_state_dict


def test_interior_point_is_farthest_from_boundary():
    m = np.zeros((20, 40), bool)
    m[2:9, 2:9] = True  # small square
    m[5:18, 15:38] = True  # large rectangle: its centre wins
    x, y = interior_point(m)
    assert 20 <= x <= 32 and 9 <= y <= 13 and m[int(y), int(x)]
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25] = True
    ring[10:20, 10:20] = False
    x, y = interior_point(ring)
    assert ring[int(y), int(x)]  # never in the hole


def test_next_click_targets_largest_error():
    gt = np.zeros((20, 20), bool)
    gt[2:18, 2:18] = True
    pred = gt.copy()
    pred[2:18, 10:18] = False  # a large missed region
    pred[0, 0] = True  # a tiny false positive
    (x, y), label = next_click(pred, gt)
    assert label == 1 and 10 <= x < 18 and gt[int(y), int(x)] and not pred[int(y), int(x)]
    assert next_click(gt, gt) is None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco("test", 2, root, progress=False)
    model = build_sam_from_config(TINY)
    model.load_state_dict(lively_state_dict(TINY, seed=2))
    return root, model


def test_evaluate_all_prompt_types(dataset):
    root, model = dataset
    summary = evaluate(model, root / "annotations.json", root / "images",
                       amg_kwargs={"points_per_side": 8}, progress=False, auto_max_images=1)
    data = json.loads((root / "annotations.json").read_text())
    assert summary["n_instances"] == len(data["annotations"]) and summary["n_images"] == 2
    rows = summary["miou"]
    for key in ("point1", "point1_oracle", "point5", "box", "box+point", "auto_recall@0.5",
                "auto_recall@0.75", "auto_mean_best_iou"):
        assert 0.0 <= rows[key] <= 1.0, key
    assert rows["point1_oracle"] >= rows["point1"]
    assert rows["auto_recall@0.5"] >= rows["auto_recall@0.75"]
    first = len([a for a in data["annotations"] if a["image_id"] == data["images"][0]["id"]])
    assert summary["auto_images"] == 1 and summary["auto_instances"] == first
    # The values, recomputed by the official segment-anything code on the same weights with
    # the protocol the report documents (tight XYXY box; the interior point; top score).
    expected, per_instance = _official_miou(model, root, data)
    for key, value in expected.items():
        assert rows[key] == pytest.approx(value, abs=1e-9), key
    assert len({round(v, 6) for v in expected.values()}) > 1  # not a degenerate dataset
    # By object size, with COCO's ranges (small < 32^2 <= medium < 96^2 <= large pixels).
    by_size = summary["miou_by_size"]
    assert sum(row["n"] for row in by_size.values()) == summary["n_instances"]
    for name, low, high in (("small", 0, 1024), ("medium", 1024, 9216),
                            ("large", 9216, 10**9)):
        sel = [(p1, b) for area, p1, b in per_instance if low <= area < high]
        if not sel:
            assert name not in by_size
            continue
        assert by_size[name]["n"] == len(sel)
        assert by_size[name]["point1"] == pytest.approx(np.mean([p for p, _ in sel]), abs=1e-9)
        assert by_size[name]["box"] == pytest.approx(np.mean([b for _, b in sel]), abs=1e-9)
    assert len(by_size) >= 2  # the synthetic scenes hold objects of several sizes


def _official_miou(model, root, data):
    segment_anything = pytest.importorskip("segment_anything")
    from samkit.data.coco import annotation_mask
    from samkit.io.image import load_image

    from helpers import build_official

    ref = build_official(TINY)
    ref.load_state_dict(model.state_dict())
    predictor = segment_anything.SamPredictor(ref)
    amg = segment_anything.SamAutomaticMaskGenerator(ref, points_per_side=8)
    ious: dict[str, list[float]] = {"point1": [], "point1_oracle": [], "box": [],
                                    "auto_mean_best_iou": []}
    per_instance = []  # (mask pixels, point1 IoU, box IoU)
    for n, im in enumerate(data["images"]):
        image = load_image(root / "images" / im["file_name"])
        predictor.set_image(image)
        auto = [r["segmentation"] for r in amg.generate(image)] if n == 0 else None
        for ann in (a for a in data["annotations"] if a["image_id"] == im["id"]):
            gt = annotation_mask(ann, im["height"], im["width"])
            ys, xs = np.nonzero(gt)
            box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
            masks, scores, _ = predictor.predict(point_coords=interior_point(gt)[None],
                                                 point_labels=np.array([1]))
            ious["point1"].append(iou(masks[int(np.argmax(scores))], gt))
            ious["point1_oracle"].append(max(iou(m, gt) for m in masks))
            ious["box"].append(iou(predictor.predict(box=box, multimask_output=False)[0][0], gt))
            if auto is not None:
                ious["auto_mean_best_iou"].append(max((iou(m, gt) for m in auto), default=0.0))
            per_instance.append((int(gt.sum()), ious["point1"][-1], ious["box"][-1]))
    return {k: float(np.mean(v)) for k, v in ious.items()}, per_instance


def test_eval_handles_16bit_grayscale_and_polygons(dataset, tmp_path):
    _root, model = dataset
    img = (np.arange(64 * 80).reshape(64, 80) * 10).astype(np.uint16)
    Image.fromarray(img).save(tmp_path / "ct.png")
    coco = {"images": [{"id": 1, "file_name": "ct.png", "height": 64, "width": 80},
                       {"id": 2, "file_name": "missing.png", "height": 5, "width": 5}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[10, 10, 40, 10, 40, 30, 10, 30]]}],
            "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    summary = evaluate(model, tmp_path / "a.json", tmp_path, prompts=("box",), progress=False)
    assert summary["n_instances"] == 1 and len(summary["skipped_images"]) == 1
    with pytest.raises(ValueError, match="unknown prompt types"):
        evaluate(model, tmp_path / "a.json", tmp_path, prompts=("clicks",), progress=False)


def test_eval_cli_writes_json(dataset, tmp_path, capsys):
    root, model = dataset
    ckpt = save_checkpoint(model, tmp_path / "tiny.safetensors")
    out = tmp_path / "report.json"
    rc = main(["eval", str(root / "annotations.json"), "--images", str(root / "images"),
               "--checkpoint", str(ckpt), "--prompts", "point1,box", "-o", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report["miou"]) == {"point1", "point1_oracle", "box"}
    assert set(report["miou_by_size"]) <= {"small", "medium", "large"}
    printed = capsys.readouterr().out
    assert "point1" in printed and "by object size" in printed


def test_data_synth_cli(tmp_path):
    assert main(["data", "synth", "--n", "2", "-o", str(tmp_path), "--split", "val"]) == 0
    data = json.loads((tmp_path / "annotations.json").read_text())
    assert len(data["images"]) == 2 and data["annotations"]
    assert iou(np.ones((2, 2), bool), np.ones((2, 2), bool)) == 1.0
