"""Exceptions of modscale.

Bad input raises :class:`InvalidValue` (a ``ValueError``) or :class:`InvalidType` (a ``TypeError``) with one
sentence that says what was wrong and what is allowed. An estimator's bad parameter raises
:class:`InvalidParameter`, which is both. All derive from :class:`UsageError`, which the CLI
turns into one line on stderr and exit status 2.
"""

from __future__ import annotations


class UsageError(Exception):
    """Base of every error caused by the caller's input (never by a bug in modscale)."""


class InvalidValue(UsageError, ValueError):
    """An argument has an allowed type but a value outside the allowed range."""


class InvalidType(UsageError, TypeError):
    """An argument has a type that is not allowed."""


class InvalidParameter(InvalidValue, InvalidType):
    """An estimator's parameter is outside what its ``_parameter_constraints`` allow (a wrong type or a
    wrong value: like scikit-learn's InvalidParameterError it is both a ValueError and a TypeError)."""


class FetchError(UsageError):
    """A download could not give the data: no network, no answer in time, an HTTP error, a file that failed
    its checksum, or an archive that is unsafe to extract. The message says what happened and what to do;
    the CLI prints it as one line and exits 2."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss.

    ``replicas`` lists the indices (along the stacked replica dimension) whose loss was not finite and
    ``step`` the optimisation step at which it happened.
    """

    def __init__(self, replicas: list[int], step: int, detail: str = ""):
        self.replicas = list(replicas)
        self.step = int(step)
        msg = f"non-finite training loss in replica(s) {self.replicas} at step {self.step}"
        super().__init__(msg + (f": {detail}" if detail else ""))


class WorkerDied(RuntimeError):
    """A worker process of a sweep ended while it ran a chunk (killed by a signal, such as the out-of-memory
    killer's SIGKILL, or exited). Nothing of that chunk is stored; a rerun runs it again."""


class Interrupted(KeyboardInterrupt):
    """A sweep was stopped by a signal (Ctrl-C's SIGINT, or SIGTERM); ``signum`` says which. Everything that
    finished before it is stored; the CLI exits with 128 + ``signum``, as shells do."""

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        super().__init__(f"stopped by {name}")


__all__ = [
    "Interrupted",
    "WorkerDied",
    "UsageError",
    "InvalidValue",
    "InvalidType",
    "InvalidParameter",
    "FetchError",
    "NonFiniteLossError",
]
