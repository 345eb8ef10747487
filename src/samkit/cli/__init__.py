"""``samkit`` command line: thin wrappers over the library (parse, call, write), one module
per command; :mod:`samkit.cli.common` holds the model and speed arguments they share.

Exit codes: 0 success, 1 some inputs failed (reported), 2 a user error (one-line message),
3 an internal error (a bug: the traceback is printed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from samkit.cli import (
    amg,
    demo,
    embed,
    evaluate,
    export,
    finetune,
    label,
    models,
    segment,
    studio,
    track,
    train,
)
from samkit.cli.common import CliError, join_negative_values
from samkit.errors import SamkitError

COMMANDS = (segment, amg, label, track, embed, models, demo, studio, train, finetune, evaluate,
            export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samkit", description="Segment Anything: masks from clicks, boxes or nothing."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    track.register_eval(sub)
    embed.register_collect(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module doc)."""
    parser = build_parser()
    args = parser.parse_args(join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    try:
        from samkit.accel import set_threads

        set_threads(getattr(args, "threads", None))
        return int(args.func(args))
    except (SamkitError, FileNotFoundError) as exc:
        print(f"samkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"samkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        traceback.print_exc()
        print(f"samkit {args.command}: internal error ({type(exc).__name__}: {exc}). This is a "
              "bug in samkit, not a problem with your input; please report it with the "
              "traceback above.", file=sys.stderr)
        return 3


__all__ = ["CliError", "build_parser", "main"]
