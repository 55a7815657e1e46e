"""`sume-batch report`: write a run's reports again, from its store alone (no request, no lock)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sume_batch import reviews
from sume_batch.commands.common import chosen_store
from sume_batch.errors import UsageError
from sume_batch.manifest import Manifest, load_manifest
from sume_batch.records import RunRecord, reading
from sume_batch.redact import Redactor
from sume_batch.report.document import Source, build_report, run_folder_name
from sume_batch.report.folder import gather_media, point_latest, write_reports

Echo = Callable[[str], None]


def report(
    target: Path,
    *,
    state_dir: Path | None,
    formats: Sequence[str],
    output: Path | None,
    env: Mapping[str, str],
    echo: Echo,
    sandbox: bool = False,
    roots: Sequence[Path] = (),
    as_json: bool = False,
) -> int:
    """(Re)write the latest run's reports from its store; `target` is the manifest or the store (.sqlite).
    With `as_json`, the report document (report.json's content) is printed to stdout, nothing else.

    Read-only on the store, so it is safe while a run is going (that report is marked partial).
    Reports go to the run's own folder (and `latest` points there) unless `output` is given.
    """
    manifest = None if target.suffix == ".sqlite" else load_manifest(target, roots=roots, unread_ok=True)
    path = target if manifest is None else chosen_store(manifest, state_dir, env, sandbox)
    if not path.exists():
        raise UsageError(f"no run store at {path}: this campaign has not been run yet")
    with reading(path) as store:
        runs = store.runs()
        source = report_source(runs[-1] if runs else None, manifest, output)
        document = build_report(store, source, redactor=Redactor.from_env(env), now=time.time())
    try:
        written = write_reports(document, source.folder, formats)
        if source.media:
            gather_media(document, source.folder, source.downloads, source.media)
    except OSError as error:
        raise UsageError(f"cannot write reports to {source.folder}: {error.strerror or error}") from None
    if as_json:
        echo(json.dumps(document, ensure_ascii=False))
    for file in written.values() if not as_json else ():
        echo(f"wrote {file}")
    if output is None:
        try:
            point_latest(source.folder)
        except OSError as error:
            reason = error.strerror or error
            raise UsageError(f"could not point latest at {source.folder}: {reason}") from None
    return 0


def report_source(run: RunRecord | None, manifest: Manifest | None, output: Path | None) -> Source:
    """Whose report and where it goes: the manifest's folders when it is given (they may have moved
    since), else those the run recorded."""
    if manifest is not None:
        campaign, downloads, reports = manifest.name, manifest.downloads, manifest.reports
    elif run is not None:
        campaign, downloads = str(run.info["campaign"]), Path(str(run.info["downloads"]))
        reports = Path(str(run.info["reports"]))
    else:
        raise UsageError("this store records no run yet: give the campaign's manifest instead")
    if output is not None:
        folder = output
    elif run is not None:
        folder = reports / campaign / run_folder_name(run)
    else:
        raise UsageError("this store records no run yet: pass --output DIR to write a report anyway")
    decisions = reviews.for_report(manifest.folder, manifest.name) if manifest is not None else None
    media = manifest.report_media if manifest is not None else None
    return Source(
        campaign=campaign, downloads=downloads, folder=folder, run=run, decisions=decisions, media=media
    )
