"""``modscale theory``: closed-form losses on the command line, and the theory figures."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("theory", help="closed-form train/test loss, or the theory figures")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
