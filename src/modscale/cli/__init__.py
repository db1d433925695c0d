"""The ``modscale`` command.

Every subcommand is a thin layer over the library. Bad input (a :class:`modscale.errors.UsageError` or an
argparse error) prints one line to stderr and exits 2 with nothing written; any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from modscale import __version__
from modscale.errors import UsageError, WorkerDied

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _ParserError(UsageError):
    """A command line argparse rejected; ``prog`` names the (sub)command, as argparse itself would."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ParserError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modscale", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"modscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    from modscale.cli import _data, _fit, _sweeps, _theory

    for module in (_sweeps, _theory, _data, _fit):
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.handler(args) or EXIT_OK)
    except UsageError as exc:
        print(f"{getattr(exc, 'prog', 'modscale')}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WorkerDied as exc:  # not a bug of ours: the system killed a worker (out of memory, most often)
        print(f"modscale: {exc}; every run that finished is stored", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM during a sweep (modscale.errors.Interrupted)
        signum = getattr(exc, "signum", 2)
        what = f" ({exc})" if str(exc) else ""
        print(
            f"modscale: interrupted{what}; every run that finished is stored, the same command resumes",
            file=sys.stderr,
        )
        return 128 + signum
    except BrokenPipeError:  # the reader went away (`modscale list | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
