"""Every error sume-batch raises on purpose, caught in one place at the CLI edge (`cli.main`).

    SumeBatchError                 exit 2 unless a subclass says otherwise
    ├── UsageError                 a bad option or a missing file                       (exit 2)
    ├── ManifestError              a manifest that cannot be run; carries every Problem (exit 2)
    ├── RefusedError               refused before spending: budget, balance, price      (exit 3)
    ├── NotConfirmed               nobody confirmed the run (no --yes off a terminal)   (exit 4)
    ├── StoreError                 a run store that cannot be used as it is             (exit 2)
    │   ├── LockedError            another run holds the store's lock                    (exit 75)
    │   └── StoreWriteError        the store could not be written mid-run; ids printed   (exit 74)
    └── ApiError                   the API misbehaved, refused, or could not be reached (exit 69)
        ├── AuthError              401 / 403: stop every new submission                 (exit 2)
        ├── InsufficientCreditsError  402 or `insufficient_credits`
        ├── TransportError         no usable answer (network, garbage body, a redirect)
        │   └── BoundError         an answer past a size or time bound (`bounds`): never retried
        └── UncertainCreateError   a create was sent and its outcome is unknown: never re-send blindly

A Problem is one located complaint about a manifest: `file:line:col: path: message`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Problem:
    """One located complaint about a manifest, printed as `file:line:col: path: message`."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SumeBatchError(Exception):
    """The root of every error sume-batch raises on purpose."""

    exit_code = 2


class UsageError(SumeBatchError):
    """A bad option, a missing file, a conflicting flag."""


class ManifestError(SumeBatchError):
    """A manifest that cannot be run; holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class UnresolvedWorkspace(ManifestError):
    """A manifest whose only problem is that its workspace axes have not been read (or were read
    with other settings): `run` and `plan --refresh` read them, then load it again."""

    def __init__(self, problems: list[Problem], axes: tuple[Any, ...], campaign: str) -> None:
        super().__init__(problems)
        self.axes = axes  # the `workspace.WorkspaceAxis` of the manifest
        self.campaign = campaign


class RefusedError(SumeBatchError):
    """Refused before spending a credit: over budget, over balance, an unknown price."""

    exit_code = 3


class NotConfirmed(SumeBatchError):
    """A run nobody confirmed: off a terminal without `--yes`, or answered no. Nothing was sent."""

    exit_code = 4


class StoreError(SumeBatchError):
    """The run store on disk cannot be used as it is: corrupt, newer than this tool, not a store."""


class OverBudgetError(Exception):
    """A create was withheld: at the price the API has since stated, or with what other runners
    hold, it would cross a cap."""


class LockedError(StoreError):
    """Another `run` is using the same store: refused before anything is sent; try again later."""

    exit_code = 75  # EX_TEMPFAIL: not the budget's 3, so CI can tell "busy" from "too expensive"


class StoreWriteError(StoreError):
    """The store could not be written during a run (a full disk, a read-only folder, an I/O error):
    no create was sent after it, and every job id it could not take was printed and kept."""

    exit_code = 74  # EX_IOERR


class ApiError(SumeBatchError):
    """The API answered with its error envelope; `details` is kept but never printed."""

    exit_code = 69  # EX_UNAVAILABLE: the API misbehaved or could not be reached, not a bad manifest (2)

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        details: object = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.request_id = request_id
        self.details = details
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After), if it did
        super().__init__(message)

    def __str__(self) -> str:
        parts = [f"HTTP {self.status}" if self.status else None, self.code, self.args[0]]
        text = ": ".join(part for part in parts if part)
        return f"{text} (request id {self.request_id})" if self.request_id else text


class AuthError(ApiError):
    """401 or 403: the key is missing, wrong, revoked, or lacks access."""

    exit_code = 2  # the key is the user's to fix, like any other bad setting


class InsufficientCreditsError(ApiError):
    """The workspace has too few credits for the request."""


class TransportError(ApiError):
    """No usable answer: the network failed or the body was not the documented JSON."""


class BoundError(TransportError):
    """An answer went past one of our bounds (too large, too slow): not read further, never retried."""


class UncertainCreateError(ApiError):
    """A create was sent but no usable answer came back: a job may or may not exist (and cost)."""
