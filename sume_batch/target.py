"""API targets: which API, and which workspace in it, a run store's jobs belong to.

A Sume job id means something only at the API and in the workspace that issued it, so a run store
belongs to exactly one target: the base URL and the workspace `GET /me` names. Two targets never
share a store, so a rehearsal can never be taken for paid work, nor one workspace's jobs for
another's. The workspace id is never written down (it is an identifier the docs ask us not to
log): a target is known by a hash of the base URL and the workspace id.

Where the stores live, one file per campaign and target, beside the manifest (or `--state-dir`):

    .sume-batch/<campaign>.rehearsal.sqlite          any sandbox (`--sandbox`, `sume-batch sandbox`)
    .sume-batch/<campaign>.<host>-<hash8>.sqlite     a real API and workspace
    .sume-batch/<campaign>.sqlite                    a store from before targets (migrated on use)

A sandbox is a world of its own: a fresh one (every `run --sandbox`, or a restarted server) has a
new workspace id, so a rehearsal store whose target is gone is moved aside and the rehearsal
starts again, for free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sume_batch.errors import UsageError

DEFAULT_BASE_URL = "https://www.sume.so/api/v1"  # as Sume's own CLI
DEFAULT_PORTS = {"http": 80, "https": 443}
REHEARSAL = "rehearsal"


@dataclass(frozen=True)
class Target:
    """One API and one workspace in it."""

    base_url: str
    workspace: str  # sha256 of the workspace id (never the id itself); "" when /me names none
    rehearsal: bool = False  # a sandbox: free, and never mixed with paid work

    @property
    def id(self) -> str:
        """A stable name for this target, safe to print and to put in file names."""
        return hashlib.sha256(f"{self.base_url}\n{self.workspace}".encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """The part of a store's file name that names its target."""
        if self.rehearsal:
            return REHEARSAL
        host = urllib.parse.urlsplit(self.base_url).hostname or "api"
        return f"{host}-{self.id[:8]}"

    def describe(self) -> str:
        kind = "a sandbox" if self.rehearsal else "the Sume API"
        return f"{kind} at {self.base_url} (target {self.id[:8]})"

    def to_json(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "workspace": self.workspace, "rehearsal": self.rehearsal}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Target:
        return cls(str(data["base_url"]), str(data.get("workspace") or ""), bool(data.get("rehearsal")))


def normalize_url(base_url: str) -> str:
    """One spelling per API: no trailing slash, a lower-case scheme and host, and nothing that can
    carry a credential (user info, query, fragment), since it names stores and is written down."""
    parts = urllib.parse.urlsplit(base_url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    try:
        port = parts.port if parts.port != DEFAULT_PORTS.get(scheme) else None
    except ValueError:  # the URL itself is not repeated: it may hold a credential
        raise UsageError("the API's base URL (SUME_API_BASE_URL) has a port that is not a number") from None
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    return urllib.parse.urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def target_of(base_url: str, account: Mapping[str, Any], *, sandbox: bool) -> Target:
    """The target `GET /me` describes at `base_url`; a sandbox says so itself (`environment`)."""
    digest = hashlib.sha256(ident.encode()).hexdigest() if (ident := account_ident(account)) else ""
    rehearsal = sandbox or account.get("environment") == "sandbox"
    return Target(normalize_url(base_url), digest, rehearsal)


def account_ident(account: Mapping[str, Any]) -> str:
    """What names the workspace in `GET /me`: `workspace.id`, else `workspace_id`, else the key's or
    the user's id (a key resolves to exactly one workspace); "" when the answer names none."""
    for parent, name in (("workspace", "id"), ("", "workspace_id"), ("api_key", "id"), ("user", "id")):
        holder = account.get(parent) if parent else account
        bare = holder if parent == "workspace" else None  # `"workspace": "ws_…"`
        value = holder.get(name) if isinstance(holder, Mapping) else bare
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return f"{parent or 'top'}:{value}"
    return ""


def same_workspace(folder: Path, campaign: str, target: Target) -> Path | None:
    """Another store of this campaign that holds this very workspace under another spelling of the
    API's URL (`https://sume.so/...` for `https://www.sume.so/...`, a proxy): never start afresh
    beside it, which would buy the campaign again."""
    if target.rehearsal or not target.workspace:
        return None
    for path, recorded in _recorded_stores(folder, campaign):
        same = recorded.get("workspace") == target.workspace and not recorded.get("rehearsal")
        if same and recorded.get("base_url") != target.base_url:
            return path
    return None


STATE_ENV = "SUME_BATCH_STATE"  # a PostgreSQL URL: the shared run store (`--state` sets it too)


def shared_state(manifest_state: str | None, state_dir: Path | None, env: Mapping[str, str]) -> str | None:
    """The PostgreSQL URL of a campaign's shared run store (see `pg`), or None for the SQLite store
    in its folder. A folder said on the command line (`--state-dir`) wins; then `--state` or
    SUME_BATCH_STATE; then the manifest's `state:`. A value that is no PostgreSQL URL is an error."""
    if state_dir is not None:
        return None
    from sume_batch import pg  # noqa: PLC0415

    chosen = env.get(STATE_ENV) or manifest_state
    if chosen and not pg.is_url(chosen):
        raise UsageError(f"{STATE_ENV} (--state) must be a postgresql:// URL; a folder is --state-dir")
    return chosen or None


def store_folder(manifest_folder: Path, state_dir: Path | None) -> Path:
    """Where a campaign's stores live: `.sume-batch/` beside the manifest (ignored by git), or --state-dir."""
    return state_dir or manifest_folder / ".sume-batch"


def store_path(folder: Path, campaign: str, target: Target) -> Path:
    return folder / f"{campaign}.{target.label}.sqlite"


def legacy_path(folder: Path, campaign: str) -> Path:
    """The one store a campaign had before stores belonged to targets."""
    return folder / f"{campaign}.sqlite"


def aside_path(path: Path) -> Path:
    """Where a rehearsal store whose sandbox is gone is kept (the one before it is replaced)."""
    return path.with_name(path.name.removesuffix(".sqlite") + ".previous.sqlite")


def find_store(folder: Path, campaign: str, *, base_url: str, rehearsal: bool) -> Path | None:
    """The store `plan` and `status` read without asking the API: the rehearsal store, or the most
    recently written store of the API at `base_url` (a sandbox's too, when it serves there; a store
    from before targets, if that is all there is). None when the campaign has not run there."""
    if rehearsal:
        path = folder / f"{campaign}.{REHEARSAL}.sqlite"
        return path if path.exists() else None
    wanted = normalize_url(base_url)
    found = [
        path for path, recorded in _recorded_stores(folder, campaign) if recorded.get("base_url") == wanted
    ]
    if found:
        return max(found, key=_written_at)
    legacy = legacy_path(folder, campaign)
    return legacy if legacy.exists() else None


def _written_at(path: Path) -> float:
    """When a store was last written: its WAL takes the writes, so the later of the two files. An
    empty WAL is none: a reader (`status`, this very search) leaves one beside a closed store."""
    times = [0.0]
    for file in (path, Path(f"{path}-wal")):
        try:
            found = file.stat()
        except OSError:  # moved aside meanwhile, or never had a WAL
            continue
        if file == path or found.st_size > 0:
            times.append(found.st_mtime)
    return max(times)


def _recorded_stores(folder: Path, campaign: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each store of this campaign in `folder`, with the target it records; those set aside are left out
    (a campaign name may hold dots, so the recorded name decides, not the file's)."""
    for path in folder.glob(f"{campaign}.*.sqlite"):
        recorded = _recorded_target(path)
        if recorded and recorded.get("campaign") == campaign and not path.name.endswith(".previous.sqlite"):
            yield path, recorded


def _recorded_target(path: Path) -> dict[str, Any] | None:
    """The target a store records (with its campaign), read-only; None for anything else."""
    import sqlite3  # noqa: PLC0415 - only when a folder of stores is searched

    try:
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'target'").fetchone()
    except sqlite3.Error:
        return None
    try:
        recorded = json.loads(row[0]) if row else None
    except ValueError:
        return None
    return recorded if isinstance(recorded, dict) else None
