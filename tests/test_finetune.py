"""Fine-tuning: the four methods, adapter files tied to their base, merging into plain
checkpoints the official classes load, gradient checkpointing, data layouts, the loop and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from samkit import SamPredictor
from samkit.accel import use_gradient_checkpointing
from samkit.checkpoint import CheckpointError, save_checkpoint, weights_fingerprint
from samkit.config import TinyViTConfig
from samkit.errors import InputError
from samkit.registry import SamConfig, build_sam, build_sam_from_config
from samkit.testing import lively_state_dict
from samkit.train.adapters import (
    AdapterConfig,
    AdapterMismatchError,
    apply_method,
    count_parameters,
    load_adapter,
    merge_adapter,
    read_adapter,
    save_adapter,
)
from samkit.train.data import ExampleBatches, load_examples, split_examples
from samkit.train.finetune import FinetuneConfig, finetune

from helpers import TINY, build_official, scene

pytest.importorskip("peft")

TINY_T = SamConfig(
    TinyViTConfig(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4),
                  window_sizes=(7, 7, 14, 7)),
    image_size=256, prompt_embed_dim=32, mask_in_chans=8, decoder_depth=2,
    decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32,
)


def base_model(config: SamConfig = TINY, seed: int = 0):
    model = build_sam_from_config(config)
    model.load_state_dict(lively_state_dict(config, seed))
    return model.eval()


def perturb(model, scale: float = 0.02) -> None:
    """Stand-in for training: move every trainable tensor."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def click_logits(model, image: np.ndarray) -> np.ndarray:
    predictor = SamPredictor(model)
    predictor.set_image(image)
    _, _, logits = predictor.predict(point_coords=np.array([[60, 50]]),
                                     point_labels=np.array([1]), multimask_output=True)
    return logits


@pytest.mark.parametrize("config", [TINY, TINY_T], ids=["vit", "tiny_vit"])
@pytest.mark.parametrize("method", ["decoder", "lora", "adapter", "prompt"])
def test_method_trains_saves_and_reloads(tmp_path, config, method):
    model = base_model(config)
    sha = weights_fingerprint(model)
    image = scene()
    before = click_logits(model, image)
    cfg = AdapterConfig(method=method, lora_targets=("encoder", "decoder"))
    names = apply_method(model, cfg)
    trainable, total = count_parameters(model)
    assert names and trainable == sum(p.numel() for n, p in model.named_parameters()
                                      if n in names) and trainable < total
    if method != "prompt":  # LoRA's B, the adapters' up-projections start at zero
        np.testing.assert_array_equal(click_logits(model.eval(), image), before)
    # only the method's tensors get gradients
    x = torch.rand(1, 3, config.image_size, config.image_size) * 255
    feats = model.image_encoder(model.preprocess(x))
    sparse, dense = model.prompt_encoder(points=(torch.tensor([[[30.0, 40.0]]]),
                                                 torch.tensor([[1]])), boxes=None, masks=None)
    masks, _ = model.mask_decoder(feats, model.prompt_encoder.get_dense_pe(), sparse, dense,
                                  True)
    masks.sum().backward()
    got_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got_grad and got_grad <= set(names)
    perturb(model)
    trained = click_logits(model.eval(), image)
    assert not np.allclose(trained, before)
    path = save_adapter(model, cfg, tmp_path / "a.safetensors", sha, "tiny")
    # reload onto a fresh copy of the same base: the same outputs, built in inference mode too
    with torch.inference_mode():
        fresh = load_adapter(base_model(config), path)
        np.testing.assert_array_equal(click_logits(fresh, image), trained)
    with pytest.raises(AdapterMismatchError, match="another base model"):
        load_adapter(base_model(config, seed=1), path)


def test_adapter_file_is_small_and_describes_itself(tmp_path):
    model = base_model()
    cfg = AdapterConfig(method="lora", rank=4)
    apply_method(model, cfg)
    path = save_adapter(model, cfg, tmp_path / "lora.safetensors", weights_fingerprint(
        base_model()), "tiny")
    file = read_adapter(path)
    assert file.config == cfg and file.base_model == "tiny"
    assert all(".lora_" in k for k in file.tensors)
    # encoder only: qkv and proj of 4 blocks, rank 4, width 32
    assert sum(t.numel() for t in file.tensors.values()) == 4 * 4 * (32 + 96 + 32 + 32)
    full = save_checkpoint(base_model(), tmp_path / "full.safetensors", TINY)
    with pytest.raises(CheckpointError, match="not a samkit adapter"):
        read_adapter(full)


@pytest.mark.parametrize("method", ["lora", "decoder"])
def test_merge_gives_a_checkpoint_the_official_classes_load(tmp_path, method):
    model = base_model()
    sha = weights_fingerprint(model)
    cfg = AdapterConfig(method=method, lora_targets=("encoder", "decoder"))
    apply_method(model, cfg)
    perturb(model, 0.01)
    path = save_adapter(model, cfg, tmp_path / "a.safetensors", sha)
    unmerged = load_adapter(base_model(), path)
    merged = merge_adapter(load_adapter(base_model(), path), cfg)
    state = merged.state_dict()
    assert set(state) == set(base_model().state_dict())  # plain keys again
    official = build_official(TINY)
    official.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 256, 256) * 255
    with torch.no_grad():
        emb_u = unmerged.image_encoder(unmerged.preprocess(x))
        emb_o = official.image_encoder(official.preprocess(x))
        points = (torch.tensor([[[60.0, 50.0]]]), torch.tensor([[1]]))
        outs = []
        for m, emb in ((unmerged, emb_u), (official, emb_o)):
            sparse, dense = m.prompt_encoder(points=points, boxes=None, masks=None)
            outs.append(m.mask_decoder(emb, m.prompt_encoder.get_dense_pe(), sparse, dense,
                                       True)[0])
    scale = float(emb_u.abs().max())
    assert float((emb_u - emb_o).abs().max()) <= 1e-5 * max(1.0, scale)
    assert float((outs[0] - outs[1]).abs().max()) <= 1e-5 * max(1.0, float(outs[0].abs().max()))


@pytest.mark.parametrize("method", ["adapter", "prompt"])
def test_merge_refuses_methods_that_add_modules(method):
    model = base_model()
    cfg = AdapterConfig(method=method)
    apply_method(model, cfg)
    with pytest.raises(InputError, match="cannot hold"):
        merge_adapter(model, cfg)


def test_build_sam_applies_an_adapter(tmp_path):
    ckpt = save_checkpoint(base_model(), tmp_path / "tiny.safetensors", TINY)
    model = build_sam(checkpoint=ckpt)
    cfg = AdapterConfig(method="adapter")
    apply_method(model, cfg)
    perturb(model)
    path = save_adapter(model, cfg, tmp_path / "ad.safetensors", weights_fingerprint(
        build_sam(checkpoint=ckpt)))
    image = scene()
    expected = click_logits(model.eval(), image)
    np.testing.assert_array_equal(
        click_logits(build_sam(checkpoint=ckpt, adapter=path), image), expected)
    other = save_checkpoint(base_model(seed=2), tmp_path / "other.safetensors", TINY)
    with pytest.raises(AdapterMismatchError):
        build_sam(checkpoint=other, adapter=path)


def test_bad_adapter_settings():
    model = base_model()
    apply_method(model, AdapterConfig(method="adapter"))
    with pytest.raises(InputError, match="already has an adapter"):
        apply_method(model, AdapterConfig(method="lora"))
    with pytest.raises(InputError, match="unknown fine-tuning method"):
        AdapterConfig(method="dora")
    with pytest.raises(InputError, match="LoRA targets"):
        AdapterConfig(lora_targets=("neck",))


@pytest.mark.parametrize("config", [TINY, TINY_T], ids=["vit", "tiny_vit"])
def test_gradient_checkpointing_gives_the_same_gradients(config):
    model = base_model(config)
    apply_method(model, AdapterConfig(method="lora"))
    x = torch.rand(1, 3, config.image_size, config.image_size) * 255

    def grads():
        model.zero_grad()
        model.image_encoder(model.preprocess(x)).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    use_gradient_checkpointing(model)
    assert any("Checkpointed" in type(m).__name__ for m in model.image_encoder.modules())
    checked = grads()
    assert plain.keys() == checked.keys() and plain
    for name in plain:
        torch.testing.assert_close(checked[name], plain[name], rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # inference takes the plain path
        model.image_encoder(model.preprocess(x))


# -- data ----------------------------------------------------------------------------------
def write_labelmaps(folder, n: int = 5, size=(96, 120), mask_dir: str = "masks"):
    (folder / "images").mkdir(parents=True)
    (folder / mask_dir).mkdir()
    for i in range(n):
        img = scene(*size, seed=i)
        lab = np.zeros(size, dtype=np.uint16)
        lab[10 + i : 40 + i, 20:60] = 1
        lab[50:80, 70:110 - i] = 300  # 16-bit label values
        Image.fromarray(img).save(folder / "images" / f"im{i}.jpg")
        Image.fromarray(lab).save(folder / mask_dir / f"im{i}.png")
    return folder


def test_labelmap_folder_and_split(tmp_path):
    data = write_labelmaps(tmp_path / "d", n=6, mask_dir="labels")
    examples = load_examples(data)
    assert len(examples) == 6
    image, masks = examples[0].load()
    assert image.shape == (96, 120, 3) and masks.shape == (2, 96, 120) and masks.dtype == bool
    train, val = split_examples(examples, 0.34, seed=0)
    assert len(val) == 2 and not {e.name for e in train} & {e.name for e in val}
    assert split_examples(examples, 0.0)[1] == []
    batch = ExampleBatches(train, 64, images_per_step=3, targets_per_image=1)(0)
    assert batch.images.shape == (3, 3, 64, 64) and batch.masks.shape == (3, 64, 64)
    assert batch.sizes.tolist() == [[51, 64]] * 3 and batch.counts.tolist() == [1, 1, 1]
    assert not batch.masks[:, 51:].any()  # padding is background
    (data / "labels" / "im0.png").unlink()
    with pytest.raises(InputError, match="do not pair up"):
        load_examples(data)
    with pytest.raises(InputError, match="images/ and masks/"):
        load_examples(data / "images")


def test_nifti_label_volumes_become_slices_split_by_scan(tmp_path):
    nib = pytest.importorskip("nibabel")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for s in range(3):
        vol = np.random.default_rng(s).normal(40, 20, (64, 48, 5)).astype(np.float32)
        lab = np.zeros((64, 48, 5), dtype=np.uint8)
        lab[10:30, 10:30, 1:4] = 1
        vol[lab > 0] += 300
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "images" / f"s{s}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / "masks" / f"s{s}.nii.gz"))
    examples = load_examples(tmp_path)
    assert len(examples) == 9  # slices 1..3 of 3 scans
    image, masks = examples[0].load()
    assert image.shape == (48, 64, 3) and masks.shape == (1, 48, 64)
    train, val = split_examples(examples, 0.3)
    assert len({e.group for e in val}) == 1 and len(val) == 3
    assert not {e.group for e in train} & {e.group for e in val}


# -- the loop and the command line -----------------------------------------------------------
def test_finetune_loop_resumes_and_keeps_the_best(tmp_path):
    data = write_labelmaps(tmp_path / "d", n=6)
    train, val = split_examples(load_examples(data), 0.3)
    cfg = FinetuneConfig(adapter=AdapterConfig(method="decoder"), steps=4, eval_every=2,
                         images_per_step=2, targets_per_image=2, patience=0)
    out = tmp_path / "run"
    first = finetune(base_model(), train, val, cfg, out, base_name="tiny", progress=False)
    assert first["steps"] == 4 and first["base_eval"] is not None
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and "val_miou_box" in log[0]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]
    # longer: resumes at step 4 (the settings are otherwise the same)
    longer = FinetuneConfig(**{**cfg.__dict__, "steps": 6})
    second = finetune(base_model(), train, val, longer, out, progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert second["steps"] == 6 and [e["step"] for e in log if "loss" in e][-2:] == [5, 6]
    evals = [e for e in log if "val_miou_box" in e]
    best = max(evals, key=lambda e: e["val_miou_point"] + e["val_miou_box"])
    assert second["best_step"] == best["step"]
    other = FinetuneConfig(**{**cfg.__dict__, "lr": 1e-2})
    with pytest.raises(InputError, match="other settings"):
        finetune(base_model(), train, val, other, out, progress=False)


def test_lora_on_nano_learns_the_cells_it_sees(tmp_path):
    """20 LoRA steps on two images of the cells domain lift their own mIoU: the loop, the
    loss and the adapter really train (the base, on a domain it never saw, starts low)."""
    from samkit.data.coco import write_synthetic_coco

    write_synthetic_coco("train", 2, tmp_path / "cells", domain="cells", progress=False)
    examples = load_examples(tmp_path / "cells" / "annotations.json")
    cfg = FinetuneConfig(adapter=AdapterConfig(method="lora"), steps=20, eval_every=20,
                         images_per_step=2, targets_per_image=4, lr=3e-3, patience=0,
                         warmup_steps=2)
    summary = finetune(build_sam("nano"), examples, examples, cfg, tmp_path / "run",
                       progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text()
           .splitlines()]
    base, final = summary["base_eval"], [e for e in log if "val_miou_box" in e][-1]
    assert final["val_miou_box"] + final["val_miou_point"] > \
        base["val_miou_box"] + base["val_miou_point"] + 0.1


def test_cli_finetune_segment_merge(tmp_path, capsys):
    from samkit.cli import main

    ckpt = save_checkpoint(base_model(), tmp_path / "tiny.safetensors", TINY)
    assert main(["data", "synth", "--domain", "cells", "--split", "train", "--n", "3",
                 "-o", str(tmp_path / "cells")]) == 0
    img = np.array(Image.open(tmp_path / "cells" / "images" / "train_000000.png"))
    assert img.dtype == np.uint16 and img.ndim == 2
    run = tmp_path / "run"
    assert main(["finetune", str(tmp_path / "cells" / "annotations.json"), "--base", str(ckpt),
                 "--method", "lora", "--lora-targets", "encoder,decoder", "--steps", "2",
                 "--eval-every", "1", "-o", str(run)]) == 0
    err = capsys.readouterr().err
    assert "trainable parameters" in err and "validation mIoU" in err
    adapter = run / "adapter.safetensors"
    assert main(["segment", str(tmp_path / "cells" / "images" / "train_000000.png"),
                 "--checkpoint", str(ckpt), "--adapter", str(adapter), "--point", "50,60",
                 "-o", str(tmp_path / "seg")]) == 0
    assert main(["merge", str(adapter), "--base", str(ckpt), "-o",
                 str(tmp_path / "merged.pth")]) == 0
    state = torch.load(tmp_path / "merged.pth", weights_only=True)
    build_official(TINY).load_state_dict(state, strict=True)
    other = save_checkpoint(base_model(seed=3), tmp_path / "other.safetensors", TINY)
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "cells" / "images" / "train_000000.png"),
                 "--checkpoint", str(other), "--adapter", str(adapter), "--point", "50,60",
                 "-o", str(tmp_path / "seg2")]) == 2
    assert "another base model" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "cells"), "--base", "vit_b", "-o",
                 str(tmp_path / "r2")]) == 2
    assert "images/ and masks/" in capsys.readouterr().err


def test_missing_peft_names_the_extra(monkeypatch):
    import sys

    from samkit._extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtraError, match=r"samkit\[finetune\]"):
        apply_method(base_model(), AdapterConfig(method="lora"))


@pytest.mark.parametrize("method", ["lora", "prompt"])
def test_an_adapted_model_exports_to_onnx(tmp_path, method):
    """The exported graphs carry the adapter (LoRA layers, learned prompt tokens)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from samkit.backends.onnxruntime import OnnxPredictor
    from samkit.export.onnx import export_onnx

    model = base_model()
    apply_method(model, AdapterConfig(method=method))
    perturb(model)
    model.eval()
    export_onnx(model, tmp_path)
    image = scene()
    got, expected = [], []
    for predictor, out in ((OnnxPredictor(tmp_path), got), (SamPredictor(model), expected)):
        predictor.set_image(image)
        masks, _, _ = predictor.predict(point_coords=np.array([[60, 50]]),
                                        point_labels=np.array([1]))
        out.append(masks)
    inter = (got[0] & expected[0]).sum((1, 2))
    union = (got[0] | expected[0]).sum((1, 2))
    assert (inter / np.maximum(union, 1) >= 0.999).all()


def test_studio_opens_a_project_with_an_adapter(tmp_path):
    """`samkit studio --adapter`: the adapted model serves the project, and its embeddings
    live in a cache of their own (the base model's cached embeddings are not reused)."""
    from samkit.studio.launch import open_project

    ckpt = save_checkpoint(base_model(), tmp_path / "tiny.safetensors", TINY)
    model = build_sam(checkpoint=ckpt)
    cfg = AdapterConfig(method="lora")
    sha = weights_fingerprint(model)
    apply_method(model, cfg)
    perturb(model)
    adapter = save_adapter(model, cfg, tmp_path / "lora.safetensors", sha)
    (tmp_path / "images").mkdir()
    Image.fromarray(scene()).save(tmp_path / "images" / "a.png")
    plain, _ = open_project(tmp_path / "p", checkpoint=ckpt, images_dir=tmp_path / "images")
    adapted, _ = open_project(tmp_path / "p", checkpoint=ckpt, images_dir=tmp_path / "images",
                              adapter=adapter)
    assert adapted.model_id != plain.model_id and adapted.cache_dir != plain.cache_dir
    image = scene()
    np.testing.assert_array_equal(click_logits(adapted.model, image),
                                  click_logits(model.eval(), image))
