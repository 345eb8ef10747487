"""Tiny random CLIP, OWLv2, Grounding DINO and open_clip models, saved the way the real ones
are distributed (``save_pretrained`` folders with tokenizer files written here), so the tests
run samkit's real loading, pre- and post-processing on them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("a", "an", "the", "photo", "of", "cropped", "cat", "dog", "car", "red", "blue",
         "square", "disc", "circle", "object", "box")


def clip_tokenizer(folder: Path):
    """A CLIP BPE tokenizer whose vocabulary holds the letters and :data:`WORDS`."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz.,{}")
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = ["#version: 0.2"]
    for w in WORDS:
        toks = [*w[:-1], w[-1] + "</w>"]
        while len(toks) > 1:
            a, b = toks[0], toks[1]
            if f"{a} {b}" not in merges:
                merges.append(f"{a} {b}")
            vocab.setdefault(a + b, len(vocab))
            toks = [a + b, *toks[2:]]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def _text_config(tok, positions: int) -> dict:
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=positions,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)


def save_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny ``CLIPModel`` with its processor in ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder / "_tok")
    cfg = CLIPConfig(text_config=_text_config(tok, 77),
                     vision_config=dict(hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        image_size=32, patch_size=8),
                     projection_dim=16)
    CLIPModel(cfg).eval().save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok).save_pretrained(folder)
    return folder


def save_owlv2(folder: Path, seed: int = 0) -> Path:
    """A tiny ``Owlv2ForObjectDetection`` (64 px input, 16 boxes) with its processor."""
    return _save_owl(folder, "Owlv2", seed)


def save_owlvit(folder: Path, seed: int = 0) -> Path:
    """A tiny ``OwlViTForObjectDetection`` (OWL-ViT v1: resizes without padding)."""
    return _save_owl(folder, "OwlViT", seed)


def _save_owl(folder: Path, prefix: str, seed: int) -> Path:
    import transformers

    def part(name: str):
        return getattr(transformers, prefix + name)

    torch.manual_seed(seed)
    tok = clip_tokenizer(folder / "_tok")
    cfg = part("Config")(text_config=_text_config(tok, 16),
                         vision_config=dict(hidden_size=32, intermediate_size=37,
                                            num_hidden_layers=2, num_attention_heads=4,
                                            image_size=64, patch_size=16),
                         projection_dim=32)
    part("ForObjectDetection")(cfg).eval().save_pretrained(folder)
    size = {"height": 64, "width": 64}
    extra = {"crop_size": size} if prefix == "OwlViT" else {}
    part("Processor")(image_processor=part("ImageProcessor")(size=size, **extra),
                      tokenizer=tok).save_pretrained(folder)
    return folder


def save_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """A tiny ``GroundingDinoForObjectDetection`` (Swin and BERT of one layer, 20 queries)
    with a BERT word-piece vocabulary of :data:`WORDS`."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "_vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",",
                                *WORDS]) + "\n")
    tok = BertTokenizer(str(vocab))
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 1, 1], window_size=4,
                                   out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=16,
                               max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=20,
        max_text_len=32, num_feature_levels=4, encoder_n_points=2, decoder_n_points=2)
    GroundingDinoForObjectDetection(cfg).eval().save_pretrained(folder)
    GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64,
                                                          "longest_edge": 96}),
        tokenizer=tok).save_pretrained(folder)
    return folder


def save_open_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny open_clip model in the Hub layout (``open_clip_config.json`` and
    ``open_clip_model.safetensors``); it uses open_clip's own bundled tokenizer."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": {"embed_dim": 16,
                         "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                        "patch_size": 8, "head_width": 16},
                         "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32,
                                      "heads": 2, "layers": 1}},
           "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                              "std": [0.26862954, 0.26130258, 0.27577711]}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    model = open_clip.CLIP(**cfg["model_cfg"])
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder
