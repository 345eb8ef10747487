"""``samkit models``: the registered variants and their checkpoint files."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list model variants and official checkpoints")
    models.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from samkit.registry import DEFAULT_ALIASES, MODELS, build_sam_from_config

    rows = []
    for name, entry in MODELS.items():
        with torch.device("meta"):
            model = build_sam_from_config(entry.config)
        n_params = sum(p.numel() for p in model.parameters())
        w = entry.weights
        size = "-"
        if w is not None:
            n_bytes = w.bundled_path().stat().st_size if w.bundled and w.bundled_path().exists() \
                else w.size_bytes
            size = f"{n_bytes / 2**20:.1f} MiB" if n_bytes else (
                "missing" if w.bundled else "-")
        filename = "-" if w is None else w.filename + (" (bundled)" if w.bundled else "")
        rows.append((name, f"{n_params / 1e6:.1f}M", filename, size, entry.description))
    header = ("model", "params", "checkpoint", "size", "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    aliases = ", ".join(f"{a} = {t}" for a, t in DEFAULT_ALIASES.items())
    print(f"\naliases: {aliases}")
    print("official checkpoints: https://dl.fbaipublicfiles.com/segment_anything/<checkpoint>")
    print("MobileSAM (vit_t): https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/"
          "mobile_sam.pt")
    return 0
