"""Strict checkpoint loading and its error messages."""

from __future__ import annotations

import pytest
import torch

from samkit import CheckpointError, build_sam, save_checkpoint
from samkit.checkpoint import infer_config, load_state_dict, name_for_config, read_checkpoint
from samkit.registry import MODELS, build_sam_from_config, get_config

from helpers import TINY, build_official, lively_state_dict


@pytest.fixture(scope="module")
def tiny_sd():
    return lively_state_dict(TINY, seed=0)


@pytest.fixture
def pth(tmp_path, tiny_sd):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_sd, path)
    return path


def test_official_layout_loads_into_both(pth, tiny_sd):
    model = build_sam(TINY, checkpoint=pth)
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_sd[k]), k
    ref = build_official(TINY)
    ref.load_state_dict(torch.load(pth, weights_only=True), strict=True)


def test_infer_config_from_weights(pth):
    model = build_sam(checkpoint=pth)  # no model type: inferred from shapes
    cfg = model.config
    assert cfg.encoder.embed_dim == 32 and cfg.encoder.depth == 4
    assert cfg.encoder.global_attn_indexes == (1, 3) and cfg.encoder.window_size == 5
    assert cfg.image_size == 256 and cfg.prompt_embed_dim == 32


def test_safetensors_roundtrip_keeps_config(tmp_path, tiny_sd):
    model = build_sam_from_config(TINY)
    model.load_state_dict(tiny_sd)
    path = save_checkpoint(model, tmp_path / "tiny.safetensors")
    _sd, cfg = read_checkpoint(path)
    assert cfg == TINY  # decoder head count too, which shapes cannot tell
    loaded = build_sam(checkpoint=path)
    assert loaded.config == TINY
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, tiny_sd[k])


def test_wrapped_and_dataparallel_state_dicts(tmp_path, tiny_sd):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tiny_sd.items()}, "epoch": 3}, path)
    build_sam(TINY, checkpoint=path)


def test_missing_file_says_where_checkpoints_come_from(tmp_path):
    with pytest.raises(CheckpointError, match=r"not found.*dl\.fbaipublicfiles\.com"):
        build_sam("vit_b", checkpoint=tmp_path / "sam_vit_b_01ec64.pth")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(path)


def test_junk_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"<html>404 not found</html>" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.pth is neither a PyTorch"):
        read_checkpoint(path)


def test_truncated_pth(pth):
    data = pth.read_bytes()
    pth.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"tiny\.pth cannot be read.*truncated"):
        read_checkpoint(pth)


def test_truncated_safetensors(tmp_path, tiny_sd):
    model = build_sam_from_config(TINY)
    path = save_checkpoint(model, tmp_path / "t.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"t\.safetensors .*cannot be read"):
        read_checkpoint(path)


def test_pickled_objects_rejected(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "cfg": object.__new__(_Opaque)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(path)


class _Opaque:
    pass


def test_partial_checkpoint_names_missing_keys(tmp_path, tiny_sd):
    partial = {k: v for k, v in tiny_sd.items() if not k.startswith("mask_decoder.")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(CheckpointError) as info:
        build_sam(TINY, checkpoint=path)
    msg = str(info.value)
    assert "partial.pth" in msg and "missing keys" in msg and "mask_decoder." in msg


def test_unexpected_and_mismatched_keys(tmp_path, tiny_sd):
    bad = dict(tiny_sd)
    bad["extra.weight"] = torch.zeros(3)
    bad["mask_decoder.iou_token.weight"] = torch.zeros(1, 7)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as info:
        build_sam(TINY, checkpoint=path)
    msg = str(info.value)
    assert "unexpected keys: extra.weight" in msg
    assert "mask_decoder.iou_token.weight (file (1, 7) vs model (1, 32))" in msg


def test_not_a_sam_checkpoint(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match="does not look like a SAM checkpoint"):
        build_sam(checkpoint=path)


def test_wrong_model_type_is_named():
    """A vit_l state dict given to vit_b: the error says it looks like vit_l (meta tensors)."""
    with torch.device("meta"):
        vit_b = build_sam_from_config(get_config("vit_b"))
        vit_l_sd = build_sam_from_config(get_config("vit_l")).state_dict()
    known = {name: entry.config for name, entry in MODELS.items()}
    assert name_for_config(infer_config(vit_l_sd), known) == "vit_l"
    with pytest.raises(CheckpointError, match="looks like a vit_l checkpoint"):
        load_state_dict(vit_b, vit_l_sd, "sam_vit_l_0b3195.pth", expected_name="vit_b",
                        known=known)
    with pytest.raises(CheckpointError, match="holds a SAM-layout model with vit encoder"):
        load_state_dict(vit_b, vit_l_sd, "x.pth")  # no names known: shapes only


def test_registry_and_loader_do_not_import_each_other():
    import ast
    from pathlib import Path

    import samkit

    root = Path(samkit.__file__).parent
    for module, other in (("checkpoint", "samkit.registry"), ("config", "samkit.registry"),
                          ("config", "samkit.checkpoint")):
        tree = ast.parse((root / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert other not in imported, (module, other)


def test_stored_config_is_respected(tmp_path):
    from samkit.config import SamConfig

    odd = SamConfig.from_dict({**TINY.to_dict(), "pixel_mean": (1.0, 2.0, 3.0)})
    model = build_sam_from_config(odd)
    path = save_checkpoint(model, tmp_path / "odd.safetensors")
    loaded = build_sam(checkpoint=path)
    assert loaded.config == odd and loaded.pixel_mean.flatten().tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(CheckpointError, match="stores its own model config"):
        build_sam(TINY, checkpoint=path)
    # the flat config that older samkit checkpoints stored still reads
    flat = {"encoder_embed_dim": 32, "encoder_depth": 4, "encoder_num_heads": 2,
            "encoder_global_attn_indexes": [1, 3], "patch_size": 16, "window_size": 5,
            **{k: v for k, v in TINY.to_dict().items() if k != "encoder"}}
    assert SamConfig.from_dict(flat) == TINY
    assert SamConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown encoder kind"):
        SamConfig.from_dict({**TINY.to_dict(), "encoder": {"kind": "resnet"}})


def test_non_persistent_buffers_are_built_with_the_model_not_left_on_meta(tmp_path):
    from torch import nn

    from samkit.registry import parameters_on_meta

    class WithBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)
            self.register_buffer("table", torch.arange(5.0) * 2, persistent=False)

    with parameters_on_meta():
        m = WithBuffer()
    assert m.lin.weight.is_meta and m.lin.weight.requires_grad
    assert not m.table.is_meta and m.table.tolist() == [0, 2, 4, 6, 8]
    assert not nn.Linear(2, 2).weight.is_meta  # the patch ends with the block

    import threading

    other: list = []
    with parameters_on_meta():  # another thread building meanwhile is not affected
        t = threading.Thread(target=lambda: other.append(nn.Linear(2, 2)))
        t.start()
        t.join()
    assert not other[0].weight.is_meta


def test_registry_builders_and_default_alias():
    from samkit import list_models, sam_model_registry

    assert list_models() == ["vit_h", "vit_l", "vit_b", "vit_t", "nano"]
    assert set(sam_model_registry) == {"default", "vit_h", "vit_l", "vit_b", "vit_t", "nano"}
    with pytest.raises(ValueError, match="unknown model type 'vit_x'"):
        build_sam("vit_x")


@pytest.mark.parametrize("legacy", [False, True])
def test_checkpoint_tensors_become_the_parameters(tmp_path, legacy):
    """build_sam with a checkpoint builds on the meta device and assigns the file's tensors
    (.pth memory-mapped; the pre-zip format loads without mmap)."""
    src = build_sam_from_config(TINY)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    model = build_sam(TINY, checkpoint=path)
    tensors = [*model.parameters(), *model.buffers()]
    assert not any(t.is_meta for t in tensors)
    for key, value in src.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert torch.equal(model.pixel_mean, src.pixel_mean)
    assert torch.equal(model.pixel_std, src.pixel_std)
    assert all(p.requires_grad for p in model.parameters())  # trainable as before


def test_pruned_vit_with_explicit_mlp_width(tmp_path):
    """SlimSAM-style pruned ViTs: any width and an explicit MLP width build, save, are
    recognised from their tensors and match the official encoder with the same widths."""
    import dataclasses

    from samkit.config import SamConfig, ViTConfig

    pruned = dataclasses.replace(
        TINY, encoder=ViTConfig(embed_dim=48, depth=2, num_heads=3, global_attn_indexes=(1,),
                                patch_size=16, window_size=4, mlp_dim=72))
    model = build_sam_from_config(pruned).eval()
    assert model.image_encoder.blocks[0].mlp.lin1.out_features == 72
    state = lively_state_dict(pruned, seed=3)
    model.load_state_dict(state)
    path = tmp_path / "pruned.pth"
    torch.save(state, path)
    again = build_sam(checkpoint=path)  # no config stored: read from the shapes
    assert again.config.encoder.mlp_dim == 72 and again.config.encoder.embed_dim == 48
    assert SamConfig.from_dict(again.config.to_dict()) == again.config
    ref = build_official(dataclasses.replace(
        pruned, encoder=dataclasses.replace(pruned.encoder, mlp_ratio=72 / 48, mlp_dim=None)))
    ref.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, pruned.image_size, pruned.image_size)
    with torch.no_grad():
        assert torch.equal(model.image_encoder(x), ref.eval().image_encoder(x))
