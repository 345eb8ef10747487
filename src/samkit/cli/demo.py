"""``samkit demo``: the bundled model on a bundled sample image."""

from __future__ import annotations

import argparse
from pathlib import Path

from samkit.cli.common import add_speed_args, device


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="run the bundled nano model on a bundled sample image")
    demo.add_argument("-o", "--output", type=Path, default=Path("samkit-demo"),
                      help="output directory (default ./samkit-demo)")
    demo.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    add_speed_args(demo, model_switches=False)
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samkit.demo import run_demo

    paths = run_demo(args.output, device=device(args.device))
    for label, path in paths.items():
        print(f"{label}: {path}")
    return 0
