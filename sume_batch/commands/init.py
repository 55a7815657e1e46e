"""`sume-batch init`: scaffold a campaign folder (issue 14).

Writes, beside each other: `campaign.yaml` (a commented manifest whose first line points editors at
the schema), `data/products.csv` (a sample catalog its matrix reads), `campaign.schema.json` (the
schema this version reads, for editors offline) and the `.gitignore` entries for what runs write.
A file that exists is kept, never overwritten, except the schema copy, which is brought up to this
version's: run `init` again after an upgrade.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from sume_batch.confine import read_regular
from sume_batch.errors import UsageError

Echo = Callable[[str], None]
SCHEMA_NAME = "campaign.schema.json"
IGNORED = (".sume-batch/", "outputs/", "reports/")

MANIFEST = """\
# yaml-language-server: $schema=./campaign.schema.json
# A campaign: every row of data/products.csv × every format × every language is one image job.
#   sume-batch validate campaign.yaml           check it, offline
#   sume-batch plan campaign.yaml               what it costs, before anything is spent
#   sume-batch run campaign.yaml --sandbox      a free rehearsal against the embedded sandbox
#   SUME_API_KEY=... sume-batch run campaign.yaml
version: 1
name: {quoted}
description: Product images for every format and language.

matrix:
  # A data axis: one value per row, each row a mapping templates read ({{{{ product.name_de }}}}).
  # Columns are strings unless typed below, so the SKU 007 stays 007. `key` names a row in plan,
  # reports, --only product=007 and exclude; `where` keeps only some rows.
  product:
    from: data/products.csv
    key: sku
    where: {{active: true}}
    columns: {{active: boolean, price: number}}
  format: [square, story]
  language: [de, en]

vars:
  ratio: {{square: "1:1", story: "9:16"}}

jobs:
  - id: "{{{{ product.sku }}}}-{{{{ format }}}}-{{{{ language }}}}"
    type: image
    prompt: >-
      {{{{ product.name_de if language == "de" else product.name_en }}}} on a clean studio table,
      soft morning light, premium product photography
    aspect_ratio: "{{{{ ratio[format] }}}}"

budget:
  max_credits: 100        # run refuses, before any create, a plan that could cross it

output:
  downloads: "outputs/{name}"
  reports: reports
"""

PRODUCTS = """\
sku,name_de,name_en,price,active
007,Gesichtsserum Grün,Green face serum,24.90,yes
0071,Nachtcreme für trockene Haut,Night cream for dry skin,19.50,yes
0123,Reinigungsschaum,Cleansing foam,12.00,no
"""


def init(folder: Path, *, name: str | None, echo: Echo) -> int:
    """Scaffold a campaign in `folder` (made if missing); say what was written and what is next."""
    campaign = name or slug(folder.resolve().name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", campaign):
        raise UsageError(
            f"{campaign!r} is no campaign name: use up to 64 letters, digits, '.', '_' or '-' (--name)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").mkdir(exist_ok=True)
        written = [
            _write_new(folder / "campaign.yaml", MANIFEST.format(name=campaign, quoted=json.dumps(campaign))),
            _write_new(folder / "data" / "products.csv", PRODUCTS),
            _write_schema(folder / SCHEMA_NAME),
            _ignore(folder / ".gitignore"),
        ]
    except OSError as error:
        raise UsageError(f"cannot write the campaign into {folder}: {error.strerror or error}") from None
    for path, what in written:
        echo(f"{what}: {path}")
    manifest = folder / "campaign.yaml"
    shown = shlex.quote(str(manifest))
    echo(f"Next: sume-batch validate {shown}, then sume-batch run {shown} --sandbox")
    return 0


def slug(text: str) -> str:
    words = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return words[:64] or "campaign"


def _read(path: Path) -> str | None:
    """A small regular file's text (never a FIFO or a device: see `confine.read_regular`), or None."""
    try:
        return read_regular(path, limit=1 << 20).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _write_new(path: Path, text: str) -> tuple[Path, str]:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return path, "kept (not a regular file: not followed)"
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        return path, "kept (it exists)"
    return path, "wrote"


def _write_schema(path: Path) -> tuple[Path, str]:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return path, "kept (not a regular file: not followed)"
    text = resources.files("sume_batch").joinpath("schemas", SCHEMA_NAME).read_text("utf-8")
    before = _read(path) if path.exists() else None
    if before == text:
        return path, "kept (up to date)"
    path.write_text(text, "utf-8")
    return path, "wrote" if before is None else "updated"


def _ignore(path: Path) -> tuple[Path, str]:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return path, "kept (not a regular file: not followed)"
    text = _read(path) if path.exists() else ""
    if text is None:
        return path, "kept (not a UTF-8 text file)"
    lines = text.splitlines()
    missing = [entry for entry in IGNORED if entry not in lines and f"/{entry}" not in lines]
    if not missing:
        return path, "kept (it ignores what runs write)"
    with path.open("a", encoding="utf-8") as handle:
        if text and not text.endswith("\n"):
            handle.write("\n")
        handle.write("# written by sume-batch runs\n" + "".join(f"{entry}\n" for entry in missing))
    return path, "added " + ", ".join(missing) + " to"
