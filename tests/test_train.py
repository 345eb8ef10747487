"""Prompt simulation, losses, a tiny training run that lowers the loss, and resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from samkit.registry import SamConfig, build_sam
from samkit.train.loop import TrainConfig, init_weights, interactive_loss, lr_at, scene_batch, train
from samkit.train.losses import dice_loss, focal_loss, mask_iou, sam_loss
from samkit.train.prompts import corrective_clicks, jitter_boxes, mask_boxes, sample_points_in_masks

MICRO = SamConfig.vit(
    encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
    image_size=128, patch_size=16, window_size=4, prompt_embed_dim=32, mask_in_chans=8,
    decoder_depth=1, decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32,
)


def _masks():
    m = torch.zeros(3, 20, 30, dtype=torch.bool)
    m[0, 2:6, 3:9] = True
    m[1, 10:19, 20:29] = True
    m[2, 0, 0] = True
    return m


def test_points_fall_inside_masks():
    m = _masks()
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        xy = sample_points_in_masks(m, gen).long()
        assert all(m[i, xy[i, 1], xy[i, 0]] for i in range(3))


def test_boxes_and_jitter():
    m = _masks()
    boxes = mask_boxes(m)
    assert boxes.tolist() == [[3, 2, 9, 6], [20, 10, 29, 19], [0, 0, 1, 1]]
    jittered = jitter_boxes(boxes, (20, 30), generator=torch.Generator().manual_seed(1))
    assert (jittered - boxes).abs().max() <= 20
    assert jittered[:, 0::2].max() <= 30 and jittered.min() >= 0


def test_corrective_clicks_label_the_error():
    gt = _masks()
    pred = torch.zeros_like(gt)
    pred[1] = True  # target 1: only false positives outside the object... and none missed
    pred[1, 10:19, 20:29] = True
    pred[2, 0, 0] = True  # target 2: perfect
    xy, labels = corrective_clicks(pred, gt, torch.Generator().manual_seed(0))
    x, y = xy.long().unbind(1)
    assert labels[0] == 1 and gt[0, y[0], x[0]]  # missed object: positive click on it
    assert labels[1] == 0 and not gt[1, y[1], x[1]]  # false area: negative click off it
    assert labels[2] == 1 and gt[2, y[2], x[2]]  # perfect: positive click inside


def test_losses():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    good = (target * 20 - 10)[None]  # (1, 1, 8, 8) logits matching the target
    bad = -good
    assert focal_loss(good, target[None]).item() < focal_loss(bad, target[None]).item()
    assert dice_loss(good, target[None]).item() < 0.05 < dice_loss(bad, target[None]).item()
    logits = torch.cat([bad, good, bad], dim=1)  # three outputs, the middle one right
    _loss, best, iou = sam_loss(logits, torch.ones(1, 3), target)
    assert best.item() == 1 and iou.item() == 1.0
    assert mask_iou(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)) == 1


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) == pytest.approx(1e-4, rel=0.05)
    assert lr_at(40, cfg) > lr_at(70, cfg)


def _fixed_loss(model) -> float:
    batch = scene_batch("val", 0, 3, MICRO.image_size, 6, np.random.default_rng(0))
    with torch.no_grad():
        feats = model.image_encoder(model.preprocess(batch.images.float()))
        counts = torch.tensor([t.shape[0] for t in batch.targets])
        gt = torch.cat(batch.targets)
        use_box = torch.arange(gt.shape[0]) % 2 == 0
        loss, _ = interactive_loss(model, torch.repeat_interleave(feats, counts, dim=0), gt,
                                   use_box, 1, MICRO.image_size, torch.Generator().manual_seed(0))
    return float(loss)


CFG = TrainConfig(model="micro", steps=40, images_per_step=2, targets_per_image=6, click_rounds=1,
                  lr=2e-3, warmup_steps=5, eval_every=1000, eval_scenes=2, checkpoint_every=2)


def test_tiny_training_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    untrained = build_sam(MICRO)
    init_weights(untrained, CFG.seed)
    before = _fixed_loss(untrained.eval())
    summary = train(CFG, tmp_path, progress=False, model_config=MICRO)
    assert summary["steps"] == CFG.steps
    trained = build_sam(checkpoint=tmp_path / "micro.safetensors")
    assert trained.config == MICRO
    after = _fixed_loss(trained)
    assert after < 0.8 * before, (before, after)


def test_resume_gives_the_same_weights(tmp_path):
    short = dataclasses.replace(CFG, steps=4)
    train(short, tmp_path / "a", progress=False, model_config=MICRO)
    # An interrupted run: stops after 2 of 4 steps, then a second call resumes it.
    train(short, tmp_path / "b", progress=False, model_config=MICRO, stop_after=2)
    train(short, tmp_path / "b", progress=False, model_config=MICRO)
    a = build_sam(checkpoint=tmp_path / "a" / "micro.safetensors").state_dict()
    b = build_sam(checkpoint=tmp_path / "b" / "micro.safetensors").state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    with pytest.raises(ValueError, match="another TrainConfig"):
        train(dataclasses.replace(short, lr=1.0), tmp_path / "b", progress=False,
              model_config=MICRO)


def test_init_from_weights(tmp_path):
    from samkit import save_checkpoint

    torch.manual_seed(3)
    start = build_sam(MICRO)
    path = save_checkpoint(start, tmp_path / "start.safetensors")
    cfg = dataclasses.replace(CFG, steps=1, lr=1e-9, warmup_steps=1)
    train(cfg, tmp_path / "run", progress=False, model_config=MICRO, init_from=path)
    after = build_sam(checkpoint=tmp_path / "run" / "micro.safetensors")
    for (k, a), b in zip(start.state_dict().items(), after.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k


def test_points_cover_every_pixel_of_a_mask_and_empty_masks_get_the_centre():
    m = torch.zeros(2, 6, 8, dtype=torch.bool)
    m[0, 1, 2] = m[0, 4, 7] = m[0, 5, 0] = True
    gen = torch.Generator().manual_seed(0)
    seen = {tuple(sample_points_in_masks(m, gen)[0].long().tolist()) for _ in range(200)}
    assert seen == {(2, 1), (7, 4), (0, 5)}
    assert sample_points_in_masks(m, gen)[1].tolist() == [4.0, 3.0]


def _one_step(model, device):
    from samkit.train.loop import quick_eval

    batch = scene_batch("train", 0, 2, MICRO.image_size, 4, np.random.default_rng(0))
    gen = torch.Generator().manual_seed(0)
    feats = model.image_encoder(model.preprocess(batch.images.to(device).float()))
    counts = torch.tensor([t.shape[0] for t in batch.targets], device=device)
    gt = torch.cat(batch.targets).to(device)
    use_box = torch.rand(gt.shape[0], generator=gen, device=gen.device) < 0.5
    loss, _stats = interactive_loss(model, torch.repeat_interleave(feats, counts, dim=0), gt,
                                   use_box, 2, MICRO.image_size, gen)
    loss.backward()
    return loss, quick_eval(model, 1, MICRO.image_size)


def test_a_training_step_makes_every_tensor_on_the_models_device():
    # A tensor made without a device lands on the default device; with that set to "meta",
    # any such tensor meets the model's CPU tensors and the step fails: the loop's CUDA path
    # (tensors made on the CPU) broke exactly like this.
    model = build_sam(MICRO).train()
    torch.set_default_device("meta")
    try:
        loss, metrics = _one_step(model, torch.device("cpu"))
    finally:
        torch.set_default_device(None)
    assert loss.device.type == "cpu" and torch.isfinite(loss)
    assert 0 <= metrics["val_miou_box"] <= 1
    assert all(p.grad is not None for p in model.mask_decoder.parameters() if p.requires_grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_runs_on_cuda(tmp_path):
    model = build_sam(MICRO).to("cuda").train()
    loss, _ = _one_step(model, torch.device("cuda"))
    assert loss.device.type == "cuda" and torch.isfinite(loss)
    short = dataclasses.replace(CFG, steps=3, eval_every=3)
    summary = train(short, tmp_path, progress=False, model_config=MICRO, device="cuda")
    assert summary["steps"] == 3 and "cuda" in summary["hardware"]
    assert summary["final_quick_eval"]["val_miou_box"] >= 0


def test_packed_masks_unpack_exactly():
    from samkit.train.loop import unpack_masks

    m = torch.rand(3, 16, 40, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = torch.from_numpy(np.packbits(m.numpy(), axis=-1))
    assert packed.shape == (3, 16, 5) and torch.equal(unpack_masks(packed), m)


def test_worker_processes_draw_the_same_steps():
    from samkit.train.loop import step_loader

    cfg = dataclasses.replace(CFG, steps=5)
    local = list(step_loader(cfg, MICRO.image_size, 2, workers=0))
    ahead = list(step_loader(cfg, MICRO.image_size, 2, workers=2))
    assert len(local) == len(ahead) == 3  # steps 2, 3, 4: a resumed run starts mid-stream
    for a, b in zip(local, ahead):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    later = dataclasses.replace(cfg, first_scene=100)
    assert not torch.equal(next(iter(step_loader(later, MICRO.image_size, 2, 0)))["images"],
                           local[0]["images"])


def test_time_schedule_decays_over_the_time_limit():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, schedule="time",
                      time_limit_s=100.0)
    assert lr_at(5, cfg, 0.0) == pytest.approx(6e-4)  # warm-up counts steps
    assert lr_at(1000, cfg, 0.0) == pytest.approx(1e-3)
    assert lr_at(1000, cfg, 50.0) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert lr_at(10, cfg, 100.0) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="time limit"):
        TrainConfig(schedule="time")
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="epochs")


def test_cli_trains_a_config_from_json_with_workers_and_timed_checkpoints(tmp_path, capsys):
    import json

    from samkit.cli import main

    cfg_file = tmp_path / "micro.json"
    cfg_file.write_text(json.dumps(MICRO.to_dict()))
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg_file), "--out", str(out), "--steps", "3",
            "--images-per-step", "1", "--targets-per-image", "2", "--workers", "1",
            "--checkpoint-minutes", "0.0001", "--eval-every", "2"]
    assert main(args) == 0
    model = build_sam(checkpoint=out / "micro.safetensors")
    assert model.config == MICRO
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and "val_miou_box" in rows[1]
    assert all(r["pairs"] >= 1 for r in rows)
    # resumes with another worker count (the data does not depend on it): nothing left to do
    assert main([*args[:-6], "--workers", "0", "--checkpoint-minutes", "5", *args[-2:]]) == 0
    assert main(["train", "--config", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--workers", "-1"]) == 2
    assert "--workers -1" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "t"), "--schedule", "time"]) == 2
    assert "time limit" in capsys.readouterr().err


def test_a_run_stopped_between_evals_is_evaluated_at_the_end(tmp_path):
    import json

    cfg = dataclasses.replace(CFG, steps=10, eval_every=4)
    train(cfg, tmp_path, progress=False, model_config=MICRO, stop_after=6)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6 and rows[-1]["eval_only"] and "val_miou_box" in rows[-1]


def test_a_frozen_encoder_keeps_its_weights_and_batch_norm_statistics(tmp_path):
    from samkit import save_checkpoint
    from samkit.config import TinyViTConfig

    micro_t = SamConfig(
        TinyViTConfig(embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 2),
                      window_sizes=(4, 4, 4, 4)),
        image_size=128, prompt_embed_dim=16, mask_in_chans=8, decoder_depth=1,
        decoder_num_heads=2, decoder_mlp_dim=32, iou_head_hidden_dim=16,
    )
    torch.manual_seed(4)
    start = build_sam(micro_t)
    path = save_checkpoint(start, tmp_path / "start.safetensors")
    cfg = dataclasses.replace(CFG, steps=3, freeze_encoder=True, loss_resolution="full")
    train(cfg, tmp_path / "run", progress=False, model_config=micro_t, init_from=path)
    after = build_sam(checkpoint=tmp_path / "run" / "micro.safetensors")
    before_sd, after_sd = start.state_dict(), after.state_dict()
    enc = [k for k in before_sd if k.startswith("image_encoder.")]
    assert any("running_mean" in k for k in enc)  # the TinyViT's batch norms are covered
    for k in enc:
        assert torch.equal(before_sd[k], after_sd[k]), k
    moved = [k for k in before_sd if k.startswith("mask_decoder.")
             and not torch.equal(before_sd[k], after_sd[k])]
    assert moved  # the decoder did train
    with pytest.raises(ValueError, match="loss_resolution"):
        TrainConfig(loss_resolution="high")


def test_full_resolution_loss_scores_the_upsampled_logits():
    torch.manual_seed(0)
    model = build_sam(MICRO)
    batch = scene_batch("val", 0, 1, MICRO.image_size, 4, np.random.default_rng(0))
    gt = batch.targets[0]
    with torch.no_grad():
        feats = model.image_encoder(model.preprocess(batch.images.float()))
    f = feats.expand(gt.shape[0], -1, -1, -1)
    losses = []
    for full in (False, True):
        loss, stats = interactive_loss(model, f, gt, torch.ones(gt.shape[0], dtype=torch.bool), 0,
                                       MICRO.image_size, torch.Generator().manual_seed(0),
                                       full_res=full)
        assert torch.isfinite(loss) and 0 <= stats["iou_r0"] <= 1
        losses.append(float(loss.detach()))
    assert losses[0] != losses[1]


@pytest.mark.parametrize("pad", ["normalized", "raw"])
def test_training_pads_scenes_as_the_predictor_does(pad):
    """The encoder sees each scene normalised and then zero padded (as ``set_image`` pads),
    unless ``pad="raw"`` (black padding, the older recipe)."""
    from samkit.train.loop import SceneSteps, make_optimizer, train_step, unpack_masks

    cfg = dataclasses.replace(CFG, pad=pad, images_per_step=2)
    model = build_sam(MICRO).train()
    data = SceneSteps(cfg, MICRO.image_size)[0]
    seen = []
    model.image_encoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    train_step(model, make_optimizer(model, 1e-4, 0.0), data["images"],
               unpack_masks(data["masks"]), data["counts"], cfg,
               torch.Generator().manual_seed(0),
               sizes=data["sizes"] if pad == "normalized" else None)
    x = seen[0]
    padded_somewhere = False
    for i, (h, w) in enumerate(data["sizes"].tolist()):
        torch.testing.assert_close(x[i, :, :h, :w], model.preprocess(
            data["images"][i : i + 1, :, :h, :w].float())[0, :, :h, :w])
        padding = torch.cat([x[i, :, h:, :].flatten(), x[i, :, :, w:].flatten()])
        if padding.numel():
            padded_somewhere = True
            assert bool((padding == 0).all()) == (pad == "normalized")
    assert padded_somewhere
