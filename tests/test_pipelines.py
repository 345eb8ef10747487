"""Detector boxes, text prompts and CLIP labels: samkit.pipelines and samkit label."""

from __future__ import annotations

import inspect
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from samkit import SamPredictor, build_sam
from samkit.cli import main
from samkit.errors import InputError
from samkit.pipelines import (
    AutoLabeler,
    BoxFile,
    ClipLabeler,
    Detections,
    LabelConfig,
    TextDetector,
    categories,
    from_torchvision,
    from_ultralytics,
    mask_crop,
    parse_classes,
    read_coco_detections,
    read_yolo_boxes,
    segment_boxes,
    to_entry,
)

from text_models import (
    save_clip,
    save_grounding_dino,
    save_open_clip,
    save_owlv2,
    save_owlvit,
)

transformers = pytest.importorskip("transformers")


# -- a scene with known objects --------------------------------------------------------------
H, W = 96, 128
SQUARE = (14, 20, 50, 56)  # XYXY of the red square
DISC = (72, 38, 112, 78)  # XYXY of the blue disc's box


def shapes_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, square mask, disc mask)``: a red square and a blue disc on grey."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.full((H, W, 3), 128, np.uint8)
    img[..., 1] = (100 + 40 * yy / H).astype(np.uint8)
    square = (xx >= SQUARE[0]) & (xx < SQUARE[2]) & (yy >= SQUARE[1]) & (yy < SQUARE[3])
    cx, cy, r = (DISC[0] + DISC[2]) / 2 - 0.5, (DISC[1] + DISC[3]) / 2 - 0.5, 20
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    img[square] = (220, 30, 30)
    img[disc] = (30, 40, 210)
    return img, square, disc


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


class StubDetector:
    """A text detector that knows where things are: proves box/mask alignment and naming."""

    def __init__(self):
        self.calls = []

    def detect(self, image, classes, *args):
        self.calls.append(list(classes))
        known = {"square": SQUARE, "disc": DISC}
        rows = [(known[c], 0.9 - 0.1 * i, i) for i, c in enumerate(classes) if c in known]
        if not rows:
            return Detections.empty(classes)
        boxes, scores, ids = zip(*rows)
        return Detections(np.array(boxes), np.array(scores), np.array(ids), list(classes))


@pytest.fixture(scope="module")
def nano():
    return build_sam("nano").eval()


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"clip": save_clip(root / "clip"), "owlv2": save_owlv2(root / "owlv2"),
            "gdino": save_grounding_dino(root / "gdino"), "owlvit": save_owlvit(root / "owlvit")}


# -- detections from files and detector objects ----------------------------------------------
def test_coco_instances_and_results_lists(tmp_path):
    coco = {"images": [{"id": 7, "file_name": "a.png", "height": H, "width": W},
                       {"id": 8, "file_name": "b.png", "height": H, "width": W}],
            "categories": [{"id": 3, "name": "square"}, {"id": 5, "name": "disc"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [72, 38, 40, 40],
                             "score": 0.8},
                            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [14, 20, 36, 36]}]}
    path = tmp_path / "det.json"
    path.write_text(json.dumps(coco))
    det = read_coco_detections(path)
    assert set(det) == {"a.png", "b.png"} and len(det["b.png"]) == 0
    a = det["a.png"]
    assert a.names == ["square", "disc"] and a.labels() == ["disc", "square"]
    np.testing.assert_allclose(a.boxes, [DISC, SQUARE])
    np.testing.assert_allclose(a.scores, [0.8, 1.0])

    results = [{"image_id": "a", "category_id": 2, "bbox": [72, 38, 40, 40], "score": 0.7}]
    with pytest.raises(InputError, match="without category names"):
        read_coco_detections(results)
    det = read_coco_detections(results, names=["square", "disc"])
    assert det["a"].labels() == ["disc"]
    with pytest.raises(InputError, match="not among the categories"):
        read_coco_detections({**coco, "categories": [{"id": 3, "name": "square"}]})


def test_yolo_boxes_and_class_names(tmp_path):
    (tmp_path / "labels").mkdir()
    # class cx cy w h [conf], normalised by W and H
    cx, cy = (SQUARE[0] + SQUARE[2]) / 2 / W, (SQUARE[1] + SQUARE[3]) / 2 / H
    (tmp_path / "labels" / "a.txt").write_text(
        f"0 {cx} {cy} {36 / W} {36 / H}\n1 0.5 0.5 0.25 0.5 0.4\n\n")
    (tmp_path / "data.yaml").write_text("names:\n  0: square\n  1: disc\n")
    source = BoxFile(tmp_path)
    assert source.names == ["square", "disc"]
    det = source.for_image(tmp_path / "images" / "a.jpg", (H, W))
    np.testing.assert_allclose(det.boxes[0], SQUARE, atol=1e-3)
    np.testing.assert_allclose(det.boxes[1], [48, 24, 80, 72], atol=1e-3)
    np.testing.assert_allclose(det.scores, [1.0, 0.4])
    assert len(source.for_image("none.png", (H, W))) == 0
    (tmp_path / "labels" / "bad.txt").write_text("0 0.1 0.2 0.3 0.4 0.5 0.6 0.7\n")
    with pytest.raises(InputError, match="5 or 6 numbers"):
        read_yolo_boxes(tmp_path / "labels" / "bad.txt", (H, W), ["square"])


def test_ultralytics_and_torchvision_outputs():
    class Boxes:  # the attributes of ultralytics.engine.results.Boxes
        xyxy = torch.tensor([SQUARE, DISC], dtype=torch.float32)
        conf = torch.tensor([0.9, 0.6])
        cls = torch.tensor([1.0, 0.0])

    class Result:
        def __init__(self):
            self.boxes = Boxes()
            self.names = {0: "disc", 1: "square"}

    det = from_ultralytics(Result())
    assert det.labels() == ["square", "disc"]
    np.testing.assert_allclose(det.boxes, [SQUARE, DISC])
    with pytest.raises(InputError, match="ultralytics Results"):
        from_ultralytics(object())

    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                  num_classes=3, box_score_thresh=0.0).eval()
    img, _, _ = shapes_scene()
    with torch.no_grad():
        out = model([torch.from_numpy(img).permute(2, 0, 1).float() / 255])[0]
    det = from_torchvision(out, ["__background__", "square", "disc"], score_threshold=0.0)
    assert len(det) == len(out["boxes"])
    np.testing.assert_allclose(det.boxes, out["boxes"].numpy())
    assert det.labels() == [["__background__", "square", "disc"][i] for i in out["labels"]]
    with pytest.raises(InputError, match="outside the 2 categories"):
        from_torchvision({"boxes": torch.zeros(1, 4), "scores": torch.ones(1),
                          "labels": torch.tensor([2])}, ["a", "b"])


def test_parse_classes():
    assert parse_classes(" Cat, dog ,cat. traffic  light") == ["cat", "dog", "traffic light"]
    with pytest.raises(InputError, match="no class names"):
        parse_classes(" , .")


# -- boxes -> masks --------------------------------------------------------------------------
@pytest.mark.parametrize("context", ["plain", "no_grad", "inference_mode"])
def test_segment_boxes_matches_predict_torch(nano, context):
    img, _, _ = shapes_scene()
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [W, H], size=(30, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 50, size=(30, 2))], axis=1)
    det = Detections(boxes, np.ones(30), np.zeros(30), ["thing"])
    ctx = {"plain": torch.enable_grad, "no_grad": torch.no_grad,
           "inference_mode": torch.inference_mode}[context]
    with ctx():
        predictor = SamPredictor(nano)
        predictor.set_image(img)
        one = segment_boxes(predictor, det)
        chunked = segment_boxes(predictor, det, batch_size=7)
        clipped = det.clip_to(H, W)
        t = predictor.transform.apply_boxes_torch(torch.as_tensor(clipped.boxes), (H, W))
        ref, ref_scores, _ = predictor.predict_torch(None, None, boxes=t,
                                                     multimask_output=False)
    assert one.masks.shape == (len(clipped), H, W)
    np.testing.assert_array_equal(one.masks, ref[:, 0].numpy())
    np.testing.assert_allclose(one.mask_scores, ref_scores[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(chunked.masks, one.masks)
    np.testing.assert_allclose(one.boxes, clipped.boxes)


def test_segment_boxes_multimask_and_errors(nano):
    img, square, _ = shapes_scene()
    det = Detections([SQUARE, [-20, -20, -5, -5]], [1, 1], [0, 0], ["square"])
    out = segment_boxes(nano, det, image=img, multimask=True)
    assert len(out) == 1  # the box outside the image is dropped
    assert iou(out.masks[0], square) > 0.8
    with pytest.raises(InputError, match="no image is set"):
        segment_boxes(SamPredictor(nano), det)


# -- a known detector end to end -------------------------------------------------------------
def test_stub_detector_masks_align_and_are_named(nano, tmp_path):
    img, square, disc = shapes_scene()
    stub = StubDetector()
    labeler = AutoLabeler(nano, "disc, square, cat", detector=stub)
    det = labeler.label(img)
    assert stub.calls == [["disc", "square", "cat"]]
    assert det.labels() == ["disc", "square"]
    assert iou(det.masks[0], disc) > 0.8 and iou(det.masks[1], square) > 0.8

    from pycocotools.coco import COCO

    from samkit.io.formats import directory_sink, write_dataset

    write_dataset("coco", [to_entry(det, "a.png", 1)], directory_sink(tmp_path),
                  categories(det.names))
    coco = COCO(str(tmp_path / "annotations.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert names == {1: "disc", 2: "square", 3: "cat"}
    for ann in coco.loadAnns(coco.getAnnIds()):
        truth = {"disc": disc, "square": square}[names[ann["category_id"]]]
        assert iou(coco.annToMask(ann).astype(bool), truth) > 0.8
        assert {"detector_score", "predicted_iou"} <= set(ann)


# -- text detectors ---------------------------------------------------------------------------
def _hf_threshold_kwargs(fn, value):
    """The threshold argument under the name this transformers version uses (HF keeps
    scores strictly above it: -1 keeps every box, as samkit's threshold 0 does)."""
    params = inspect.signature(fn).parameters
    return {"threshold" if "threshold" in params else "box_threshold": value}


def _same_rows(boxes, scores, ref_boxes, ref_scores):
    """Boxes and scores equal as sets of rows (ties in score may come in any order): each
    row matched to its own reference row, scores within 1e-4 and boxes within 0.01 px (CPU
    kernels round differently)."""
    a = np.column_stack([scores, boxes]).astype(np.float64)
    b = np.column_stack([ref_scores, ref_boxes]).astype(np.float64)
    assert a.shape == b.shape, (a, b)
    tol = np.r_[np.full(a.shape[1] - 4, 1e-4), np.full(4, 1e-2)]
    free = list(range(len(b)))
    for row in a:
        near = [j for j in free if (np.abs(b[j] - row) <= tol).all()]
        assert near, f"no reference row matches {row}"
        free.remove(near[0])


def test_grounding_dino_boxes_and_classes_match_hf(hf_models):
    img, _, _ = shapes_scene()
    det = TextDetector.from_pretrained(hf_models["gdino"])
    assert det.kind == "grounding_dino"
    ours = det.detect(img, "square, red disc", box_threshold=0.0, text_threshold=0.0,
                      nms_threshold=1.0, max_detections=1000)
    proc, model = det.processor, det.model
    prompt = "square. red disc."
    inputs = proc(images=img, text=prompt, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    pp = proc.post_process_grounded_object_detection
    ref = pp(out, inputs.input_ids, text_threshold=0.0, target_sizes=[(H, W)],
             **_hf_threshold_kwargs(pp, -1.0))[0]
    ref_boxes = ref["boxes"].numpy().copy()
    ref_boxes[:, [0, 2]] = ref_boxes[:, [0, 2]].clip(0, W)
    ref_boxes[:, [1, 3]] = ref_boxes[:, [1, 3]].clip(0, H)
    keep = (ref_boxes[:, 2] > ref_boxes[:, 0]) & (ref_boxes[:, 3] > ref_boxes[:, 1])
    _same_rows(ours.boxes, np.zeros(len(ours)), ref_boxes[keep], np.zeros(keep.sum()))
    # A box's class is the class whose own tokens score highest, and that is its score (HF's
    # score is the best of all tokens, the "." and [SEP] included).
    ids = inputs.input_ids[0].tolist()
    tok = proc.tokenizer
    square_t = [i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids("square")]
    disc_t = [i for i, t in enumerate(ids) if t in tok.convert_tokens_to_ids(["red", "disc"])]
    assert len(square_t) == 1 and len(disc_t) == 2
    probs = out.logits[0].sigmoid()
    per_class = torch.stack([probs[:, square_t].max(1).values, probs[:, disc_t].max(1).values],
                            1).numpy()
    assert ours.names == ["square", "red disc"]
    _same_rows(ours.boxes, np.column_stack([ours.scores, ours.class_ids]), ref_boxes[keep],
               np.column_stack([per_class.max(1), per_class.argmax(1)])[keep])
    top = det.detect(img, "square, red disc", box_threshold=0.0, text_threshold=0.0,
                     max_detections=3)
    assert len(top) <= 3 and np.all(np.diff(top.scores) <= 0)


def test_grounding_dino_splits_long_class_lists(hf_models):
    from text_models import WORDS

    img, _, _ = shapes_scene()
    det = TextDetector.from_pretrained(hf_models["gdino"])
    names = list(WORDS)  # 16 names of 2 tokens with their ".": more than a 32-token prompt
    groups = det._prompt_groups(names)
    assert [len(g) for _, g in groups] == [15, 1] and [n for _, g in groups for n in g] == names
    pooled = det.detect(img, names, 0.0, 0.0, nms_threshold=1.0, max_detections=1000)
    assert pooled.names == names
    parts = [(offset, det.detect(img, g, 0.0, 0.0, nms_threshold=1.0, max_detections=1000))
             for offset, g in groups]
    _same_rows(pooled.boxes, np.column_stack([pooled.scores, pooled.class_ids]),
               np.concatenate([p.boxes for _, p in parts]),
               np.concatenate([np.column_stack([p.scores, p.class_ids + o]) for o, p in parts]))


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_owl_boxes_match_hf(hf_models, kind):
    """OWLv2 pads to a square (boxes scale by the longer side); OWL-ViT resizes without
    padding (boxes scale by width and height)."""
    img, _, _ = shapes_scene()  # wider than tall: OWLv2 pads the bottom
    det = TextDetector.from_pretrained(hf_models[kind])
    assert det.kind == kind
    ours = det.detect(img, ["square", "disc"], box_threshold=0.0, nms_threshold=1.0,
                      max_detections=1000)
    inputs = det.processor(text=[["square", "disc"]], images=img, return_tensors="pt")
    with torch.no_grad():
        out = det.model(**inputs)
    side = max(H, W)
    target = (side, side) if kind == "owlv2" else (H, W)
    pp = det.processor.image_processor.post_process_object_detection
    ref = pp(out, target_sizes=[target], **_hf_threshold_kwargs(pp, -1.0))[0]
    # (transformers 5 rescales target_sizes to the padded square itself; older versions
    # did not, and boxes of non-square images came out squeezed)
    boxes = ref["boxes"].numpy().copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, W)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, H)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    _same_rows(ours.boxes, ours.scores, boxes[keep], ref["scores"].numpy()[keep])
    labels = ref["labels"].numpy()[keep]
    _same_rows(ours.boxes, ours.class_ids, boxes[keep], labels)


def test_detector_folder_errors(hf_models, tmp_path):
    with pytest.raises(InputError, match="not a Hugging Face model folder"):
        TextDetector.from_pretrained(tmp_path)
    with pytest.raises(InputError, match="not a text detector"):
        TextDetector.from_pretrained(hf_models["clip"])


# -- CLIP ------------------------------------------------------------------------------------
def test_mask_crop_blanks_and_pads_square():
    img, square, _ = shapes_scene()
    crop = mask_crop(img, square, margin=0.25)
    assert crop.shape == (54, 54, 3)  # 36 px + 9 px on each side
    np.testing.assert_array_equal(crop[27, 27], (220, 30, 30))
    np.testing.assert_array_equal(crop[0, 0], (220, 30, 30))  # blanked to the mask's colour
    assert mask_crop(img, np.zeros((H, W), bool)).shape == (1, 1, 3)


def test_clip_probabilities_match_clip_logits(hf_models):
    img, square, disc = shapes_scene()
    clip = ClipLabeler.from_pretrained(hf_models["clip"])
    classes = ["square", "disc", "car"]
    probs = clip.probabilities(img, np.stack([square, disc, np.zeros_like(square)]), classes,
                               templates=["a photo of a {}."])
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(hf_models["clip"]).eval()
    proc = CLIPProcessor.from_pretrained(hf_models["clip"])
    crops = [mask_crop(img, m) for m in (square, disc)]
    inputs = proc(text=[f"a photo of a {c}." for c in classes], images=crops,
                  return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**inputs).logits_per_image.softmax(-1).numpy()
    np.testing.assert_allclose(probs[:2], ref, atol=1e-5)
    np.testing.assert_array_equal(probs[2], 0)  # an empty mask is unknown

    det = Detections([SQUARE, DISC], [1, 1], [-1, -1], [])
    det.masks = np.stack([square, disc])
    top = float(probs[:2].max())
    named = clip.label(img, det, classes, threshold=top, templates=["a photo of a {}."])
    assert named.names == classes and (named.class_ids == -1).sum() >= 1
    winner = int(probs[:2].max(1).argmax())  # the mask with the top probability keeps its class
    assert named.class_ids[winner] == int(probs[winner].argmax())
    np.testing.assert_allclose(named.label_scores, probs[:2].max(1), atol=1e-6)


def test_open_clip_folder(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    folder = save_open_clip(tmp_path / "oc")
    clip = ClipLabeler.from_pretrained(folder)
    img, square, disc = shapes_scene()
    probs = clip.probabilities(img, np.stack([square, disc]), "square, disc",
                               templates=["a photo of a {}."])
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{folder}")
    tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    with torch.no_grad():
        im = model.encode_image(torch.stack([preprocess(Image.fromarray(mask_crop(img, m)))
                                             for m in (square, disc)]))
        tx = model.encode_text(tok(["a photo of a square.", "a photo of a disc."]))
        im, tx = (torch.nn.functional.normalize(x, dim=-1) for x in (im, tx))
        ref = (model.logit_scale.exp() * im @ tx.T).softmax(-1).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_clip_only_labels_automatic_masks(nano, hf_models):
    img, _, _ = shapes_scene()
    clip = ClipLabeler.from_pretrained(hf_models["clip"])
    keep_all = AutoLabeler(nano, "square, disc", clip=clip,
                           config=LabelConfig(clip_threshold=0.0, keep_unknown=True,
                                              amg={"points_per_side": 8}))
    det = keep_all.label(img)
    assert len(det) > 0 and det.masks.shape[1:] == (H, W)
    assert set(det.labels()) <= {"square", "disc"}
    probs = clip.probabilities(img, det.masks, "square, disc")
    np.testing.assert_array_equal(det.class_ids, probs.argmax(1))
    np.testing.assert_allclose(det.label_scores, probs.max(1), atol=1e-6)
    none = AutoLabeler(nano, "square, disc", clip=clip,
                       config=LabelConfig(clip_threshold=1.01, amg={"points_per_side": 8}))
    assert len(none.label(img)) == 0  # every mask unknown, dropped


def test_missing_extra_names_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)
    from samkit._extras import MissingExtraError

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingExtraError, match=r"pip install 'samkit\[text\]'"):
        TextDetector.from_pretrained(tmp_path)
    with pytest.raises(MissingExtraError, match=r"pip install 'samkit\[text\]'"):
        ClipLabeler.from_pretrained(tmp_path)
    monkeypatch.setitem(sys.modules, "open_clip", None)
    oc = tmp_path / "oc"
    oc.mkdir()
    (oc / "open_clip_config.json").write_text("{}")
    with pytest.raises(MissingExtraError, match=r"'open_clip'.*samkit\[text\]"):
        ClipLabeler.from_pretrained(oc)
    Image.fromarray(shapes_scene()[0]).save(tmp_path / "a.png")
    code = main(["label", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--text", "cat",
                 "--detector", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "samkit[text]" in err and "Traceback" not in err


# -- command line ----------------------------------------------------------------------------
@pytest.fixture()
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    img, _, _ = shapes_scene()
    Image.fromarray(img).save(folder / "a.png")
    Image.fromarray(img[:, ::-1].copy()).save(folder / "b.jpg")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_label_cli_with_a_text_detector_writes_valid_coco(hf_models, image_dir, tmp_path,
                                                          capsys):
    from pycocotools.coco import COCO

    out = tmp_path / "out"
    code = main(["label", str(image_dir), "-o", str(out), "--text", "square, disc",
                 "--detector", str(hf_models["gdino"]), "--box-threshold", "0",
                 "--text-threshold", "0", "--max-detections", "5"])
    assert code == 1  # broken.png is reported, the others labelled
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "labelled 2/3 image(s)" in captured.out
    coco = COCO(str(out / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["square", "disc"]
    assert {im["file_name"] for im in coco.loadImgs(coco.getImgIds())} == {"a.png", "b.jpg"}
    anns = coco.loadAnns(coco.getAnnIds())
    assert 0 < len(anns) <= 10 and all(coco.annToMask(a).shape == (H, W) for a in anns)
    assert (out / "overlays" / "a.png").is_file()

    # the labelled file re-imports into the studio
    from samkit.studio import Project
    from samkit.studio.export import import_coco

    project = Project(tmp_path / "proj", build_sam("nano"), "nano", images_dir=image_dir)
    report = import_coco(project.store, json.loads((out / "annotations.json").read_text()))
    assert report["imported"] == len(anns) and report["skipped"] == 0
    assert {c["name"] for c in project.store.list_classes()} >= {"square", "disc"}


def test_label_cli_from_boxes_file_yolo_output(image_dir, tmp_path):
    _, square, disc = shapes_scene()
    boxes = [{"image_id": "a", "category_id": 1, "bbox": [14, 20, 36, 36], "score": 0.9},
             {"image_id": "a", "category_id": 2, "bbox": [72, 38, 40, 40], "score": 0.8},
             {"image_id": "a", "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.1}]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / "out"
    code = main(["label", str(image_dir / "a.png"), "-o", str(out), "--boxes",
                 str(tmp_path / "boxes.json"), "--text", "square, disc", "--format", "png",
                 "--box-threshold", "0.5"])
    assert code == 0
    sem = np.array(Image.open(out / "semantic" / "a.png"))
    assert json.loads((out / "classes.json").read_text()) == {"0": "background", "1": "square",
                                                              "2": "disc"}
    assert iou(sem == 1, square) > 0.8 and iou(sem == 2, disc) > 0.8

    code = main(["label", str(image_dir / "a.png"), "-o", str(tmp_path / "yolo"), "--boxes",
                 str(tmp_path / "boxes.json"), "--text", "square, disc", "--format", "yolo",
                 "--no-overlays"])
    assert code == 0
    assert (tmp_path / "yolo" / "classes.txt").read_text() == "square\ndisc\n"
    lines = (tmp_path / "yolo" / "labels" / "a.txt").read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in lines)[:2] == [0, 1]
    assert not (tmp_path / "yolo" / "overlays").exists()


def test_segment_text_one_image(hf_models, image_dir, tmp_path, capsys):
    out = tmp_path / "seg"
    code = main(["segment", str(image_dir / "a.png"), "--text", "square", "--detector",
                 str(hf_models["owlv2"]), "--box-threshold", "0", "--max-detections", "2",
                 "-o", str(out)])
    assert code == 0
    report = json.loads((out / "a.json").read_text())
    assert report["classes"] == ["square"] and len(report["objects"]) == 2
    assert all((out / o["file"]).is_file() and o["class"] == "square"
               for o in report["objects"])
    assert (out / "a_overlay.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--text", "cat"], "say where the objects come from"),
    (["--detector", "X"], "need the class names"),
    (["--boxes", "missing.json"], "box file not found"),
])
def test_label_cli_errors(image_dir, tmp_path, capsys, argv, message):
    code = main(["label", str(image_dir), "-o", str(tmp_path / "o"), *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- studio: the find box's API ----------------------------------------------------------------
def test_studio_find_api(nano, hf_models, image_dir, tmp_path):
    testclient = pytest.importorskip("fastapi.testclient")
    from samkit.studio import Project, create_app

    (image_dir / "broken.png").unlink()
    project = Project(tmp_path / "proj", nano, "nano", images_dir=image_dir)
    client = testclient.TestClient(create_app(project), base_url="http://127.0.0.1:8765")
    image_id = next(r["id"] for r in project.store.list_images()[0] if r["file_name"] == "a.png")
    assert client.get("/api/info").json()["find"] is False
    r = client.post(f"/api/images/{image_id}/find", json={"text": "square"})
    assert r.status_code == 400 and "--detector DIR" in r.json()["detail"]

    project.labeler = AutoLabeler(project.predictor, detector=StubDetector())
    assert client.get("/api/info").json()["find"] is True
    r = client.post(f"/api/images/{image_id}/find", json={"text": "Disc, square, cat"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["classes"] == ["disc", "square", "cat"]
    found = {c["class_name"]: c for c in body["candidates"]}
    assert set(found) == {"disc", "square"} and all(c["class_id"] is None for c in found.values())
    _, square, disc = shapes_scene()
    from samkit.ops.rle import decode_coco_rle

    for name, truth in (("square", square), ("disc", disc)):
        mask = decode_coco_rle({"size": found[name]["size"], "counts": found[name]["rle"]})
        assert iou(mask, truth) > 0.8
    # accepting by class name creates the class once, then finds it
    for _ in range(2):
        r = client.post(f"/api/images/{image_id}/instances",
                        json={"rle": found["disc"]["rle"], "class_name": "disc",
                              "score": found["disc"]["score"], "source": "find"})
        assert r.status_code == 201, r.text
    assert [c["name"] for c in project.store.list_classes()] == ["disc"]
    again = client.post(f"/api/images/{image_id}/find", json={"text": "disc"}).json()
    assert again["candidates"][0]["class_id"] == project.store.list_classes()[0]["id"]
    r = client.post(f"/api/images/{image_id}/instances",
                    json={"rle": found["disc"]["rle"], "class_name": "disc", "class_id": 1})
    assert r.status_code == 400 and "one of them" in r.json()["detail"]
    r = client.post(f"/api/images/{image_id}/find", json={"text": "square",
                                                          "box_threshold": 2})
    assert r.status_code == 422

    # CLIP alone names the automatic generator's masks
    project.labeler = AutoLabeler(project.predictor,
                                  clip=ClipLabeler.from_pretrained(hf_models["clip"]),
                                  config=LabelConfig(amg={"points_per_side": 8}))
    r = client.post(f"/api/images/{image_id}/find",
                    json={"text": "square, disc", "clip_threshold": 0})
    assert r.status_code == 200, r.text
    names = {c["class_name"] for c in r.json()["candidates"]}
    assert names and names <= {"square", "disc"}


def test_studio_cli_loads_detector_and_clip(hf_models, image_dir, tmp_path, monkeypatch):
    import samkit.studio.launch as launch

    served = []
    monkeypatch.setattr(launch, "serve", lambda project, *a, **k: served.append(project))
    code = main(["studio", str(tmp_path / "proj"), "--images", str(image_dir), "--detector",
                 str(hf_models["owlv2"]), "--clip", str(hf_models["clip"])])
    assert code == 0
    (project,) = served
    assert project.labeler.detector.kind == "owlv2" and project.labeler.clip is not None
    image_id = next(r["id"] for r in project.store.list_images()[0] if r["file_name"] == "a.png")
    out = project.find(image_id, "square, disc", box_threshold=0.0, clip_threshold=0.0)
    assert all(c["class_name"] in ("square", "disc") for c in out["candidates"])
