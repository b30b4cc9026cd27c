"""The ``attnseg`` command: parse arguments, call the Python API, print. No logic of its own.

Each sub-command is a pair ``(add_arguments, run)`` registered in ``COMMANDS``; ``run`` returns the
exit code. Errors derived from ``AttnsegError`` print one line and exit 2; ``--debug`` re-raises.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from attnseg.errors import AttnsegError

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


# --- smoke: a tiny end-to-end model run (train a few steps on a synthetic sphere) -------------------
def _smoke_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=30, help="optimizer steps (default 30)")
    p.add_argument("--size", type=int, default=32, help="cube edge in voxels (default 32)")
    p.add_argument("--seed", type=int, default=0)


def _smoke_run(args: argparse.Namespace) -> int:
    from attnseg.models.smoke import smoke_run

    result = smoke_run(steps=args.steps, size=args.size, seed=args.seed)
    print(
        f"smoke run: {result['steps']} steps, loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}, "
        f"foreground Dice {result['dice']:.3f}, {result['seconds']:.1f} s"
    )
    return 0


COMMANDS: list[Command] = [
    ("smoke", _smoke_args, _smoke_run),
]


def build_parser() -> argparse.ArgumentParser:
    from attnseg import __version__

    parser = argparse.ArgumentParser(
        prog="attnseg", description="Attention U-Net for medical image segmentation"
    )
    parser.add_argument("--version", action="version", version=f"attnseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add_arguments, run in COMMANDS:
        doc = (run.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except AttnsegError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"attnseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
