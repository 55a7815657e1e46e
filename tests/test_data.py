"""data: matrix axes from CSV, TSV, JSONL, JSON and YAML files — typed columns (nothing inferred),
keys that identify rows, filters, located errors in the data file, and what `plan` says when rows
are added, removed or edited (issue 14)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, write

from sume_batch.commands.common import prepare
from sume_batch.errors import ManifestError
from sume_batch.plan import diff_plan, make_plan

PRODUCTS = """\
sku,name_de,price,active
007,Flasche Grün,12.5,yes
0071,"Glas, klar",8,yes
0099,Alt,3,no
"""

CAMPAIGN = """\
version: 1
name: catalog
matrix:
  product: {from: data/products.csv, key: sku, where: {active: true}, columns: {price: number, active: boolean}}
  lang: [de, en]
jobs:
  - id: "img-{{ product.sku }}-{{ lang }}"
    type: image
    prompt: "{{ product.name_de }} für {{ product.price }} € ({{ lang }})"
"""


def campaign(folder: Path, data: str = PRODUCTS, text: str = CAMPAIGN, name: str = "products.csv") -> Path:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return write(folder, text)


def problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as raised:
        prepare(path)
    return [str(problem) for problem in raised.value.problems]


def test_rows_become_variants_with_their_columns_typed_as_the_manifest_says(tmp_path: Path) -> None:
    _, specs = prepare(campaign(tmp_path))
    prompts = {spec.id: spec.request["prompt"] for spec in specs}
    assert prompts == {
        "img-007-de": "Flasche Grün für 12.5 € (de)",
        "img-007-en": "Flasche Grün für 12.5 € (en)",
        "img-0071-de": "Glas, klar für 8 € (de)",
        "img-0071-en": "Glas, klar für 8 € (en)",
    }  # 0099 is not active; 007 keeps its leading zeros; 8 is an integer, 12.5 a number
    assert specs[0].matrix == {"product": "007", "lang": "de"}  # a row is shown by its key


def test_untyped_columns_are_strings_and_an_empty_typed_cell_is_null(tmp_path: Path) -> None:
    data = "sku,qty,note\n007,,x\n1e3,5,\n"
    text = CAMPAIGN.replace(
        "key: sku, where: {active: true}, columns: {price: number, active: boolean}",
        "key: sku, columns: {qty: integer}",
    ).replace(
        "{{ product.name_de }} für {{ product.price }} €",
        "{{ product.qty is none }} {{ product.sku }}|{{ product.note }}",
    )
    _, specs = prepare(campaign(tmp_path, data, text))
    assert {spec.request["prompt"] for spec in specs if spec.matrix["lang"] == "de"} == {
        "True 007|x (de)",
        "False 1e3| (de)",
    }


def test_exclude_and_only_name_a_row_by_its_key(tmp_path: Path) -> None:
    text = CAMPAIGN.replace(
        "  lang: [de, en]\n", '  lang: [de, en]\n  exclude: [{product: "0071", lang: en}]\n'
    )
    path = campaign(tmp_path, text=text)
    _, specs = prepare(path)
    assert sorted(spec.id for spec in specs) == ["img-007-de", "img-007-en", "img-0071-de"]
    shown = invoke("plan", str(path), "--only", "product=0071", "--json")
    assert shown.code == 0, shown.err
    assert [job["id"] for job in json.loads(shown.out)["jobs"]] == ["img-0071-de"]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("products.tsv", "sku\tname_de\tprice\tactive\n007\tFlasche Grün\t12.5\ttrue\n"),
        ("products.jsonl", '{"sku": "007", "name_de": "Flasche Grün", "price": 12.5, "active": true}\n\n'),
        (
            "products.json",
            '[\n  {"sku": "007", "name_de": "Flasche Grün", "price": 12.5, "active": true}\n]\n',
        ),
        ("products.yaml", '- {sku: "007", name_de: Flasche Grün, price: 12.5, active: true}\n'),
    ],
)
def test_every_format_gives_the_same_rows(tmp_path: Path, name: str, data: str) -> None:
    _, specs = prepare(campaign(tmp_path, data, CAMPAIGN.replace("products.csv", name), name))
    assert [spec.request["prompt"] for spec in specs] == [
        "Flasche Grün für 12.5 € (de)",
        "Flasche Grün für 12.5 € (en)",
    ]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        (
            "products.csv",
            "",
            [
                "data/products.csv:1:1: matrix.product: the file is empty: a header row and at least one row are needed"
            ],
        ),
        (
            "products.csv",
            "sku,name_de,price,active\n",
            ["data/products.csv:1:1: matrix.product: the file holds no rows"],
        ),
        (
            "products.csv",
            "sku,name_de,price,active\n007,A,12.5,yes\n0071,B,x,yes\n007,C,1,maybe\n,D,1,no\n",
            [
                "data/products.csv:3:8: matrix.product: price: 'x' is not a number",
                "data/products.csv:4:1: matrix.product: duplicate key sku='007': the rows at lines 2 and 4",
                "data/products.csv:4:9: matrix.product: active: 'maybe' is not true/false, yes/no or 1/0",
                "data/products.csv:5:1: matrix.product: the key column 'sku' is empty",
            ],
        ),
        (
            "products.csv",
            "id,name_de,price,active\n007,A,1,yes\n",
            [
                "data/products.csv:2:1: matrix.product: key: names the column 'sku', which no row has (columns: active, id, name_de, price)"
            ],
        ),
        (
            "products.csv",
            "sku,name_de,price,active\n007,A,1\n",
            ["data/products.csv:2:1: matrix.product: the row has 3 fields; the header names 4"],
        ),
        (
            "products.csv",
            "sku,sku,price,active\n007,A,1,yes\n",
            ["data/products.csv:1:5: matrix.product: the column 'sku' is named twice (also at column 1)"],
        ),
        (
            "products.csv",
            b"sku,name_de,price,active\n007,Gr\xfcn,1,yes\n",
            ["data/products.csv:2:7: not UTF-8 text (byte 31: 0xfc); save it as UTF-8"],
        ),
        (
            "products.csv",
            "sku,name_de,price,active\n0099,Alt,3,no\n",
            ['data/products.csv:1:1: matrix.product: no row matches where: {"active": true}'],
        ),
        (
            "products.jsonl",
            '{"sku": "007", "price": 1, "active": true, "name_de": "A"}\n{"sku": 7, oops}\n',
            [
                "data/products.jsonl:2:12: matrix.product: not valid JSON: Expecting property name enclosed in double quotes"
            ],
        ),
        (
            "products.json",
            '[\n {"sku": "007", "price": "12", "active": true, "name_de": "A"},\n 5\n]',
            [
                'data/products.json:2:2: matrix.product: price: "12" is a string, not a number',
                "data/products.json:3:2: matrix.product: each item must be an object, not a number",
            ],
        ),
        (
            "products.yaml",
            "- {sku: 007, price: 1, active: true, name_de: A}\n",
            [
                'data/products.yaml:1:9: [0].sku: YAML read 007 as the octal number 7; write 7, or quote it: "007"'
            ],
        ),
    ],
)
def test_a_broken_data_file_is_refused_with_every_problem_located_in_it(
    tmp_path: Path, name: str, data: str | bytes, expected: list[str]
) -> None:
    found = problems(campaign(tmp_path, data, CAMPAIGN.replace("products.csv", name), name))
    assert [line.replace(str(tmp_path) + os.sep, "") for line in found] == expected


def test_a_data_file_must_be_beside_the_manifest_known_and_within_its_size_bound(tmp_path: Path) -> None:
    (tmp_path / "outside.csv").write_text(PRODUCTS)
    inner = tmp_path / "campaign"
    inner.mkdir()
    escaping = problems(campaign(inner, text=CAMPAIGN.replace("data/products.csv", "../outside.csv")))
    assert len(escaping) == 1 and "../outside.csv leaves the manifest's folder" in escaping[0]
    unknown = problems(campaign(inner, text=CAMPAIGN.replace("products.csv", "products.xlsx")))
    assert unknown == [f"{inner}/campaign.yaml:4:12: matrix.product: data/products.xlsx: unknown data format"
                       " (use .csv, .json, .jsonl, .ndjson, .tsv, .yaml, .yml)"]  # fmt: skip
    path = campaign(inner)
    with (inner / "data" / "products.csv").open("r+b") as handle:
        handle.truncate(100 * 1024 * 1024)  # 100 MB (sparse)
    assert problems(path) == [
        f"{path}:4:12: matrix.product: data/products.csv is larger than 67,108,864 bytes (SUME_BATCH_MAX_DATA sets the bound)"
    ]
    allowed = invoke("validate", str(path), env={"SUME_BATCH_MAX_DATA": "200MiB"})
    assert (
        allowed.code == 2 and "SUME_BATCH_MAX_DATA" not in allowed.err
    )  # read now: a NUL-padded CSV has other problems


def test_a_run_with_a_broken_data_file_exits_2_before_any_request(tmp_path: Path) -> None:
    path = campaign(tmp_path, "sku,name_de,price,active\n007,A,x,yes\n")
    result = invoke("run", str(path), "--sandbox", "--yes")
    assert result.code == 2
    assert "data/products.csv:2:7: matrix.product: price: 'x' is not a number" in result.err
    assert not (tmp_path / ".sume-batch").exists() and not (tmp_path / "reports").exists()


def stored_after(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """States and ids as a store would hold them after every job of this plan was downloaded."""
    _, specs = prepare(path)
    return {spec.key: "downloaded" for spec in specs}, {spec.key: spec.id for spec in specs}


def diff_after_edit(tmp_path: Path, edited: str) -> dict[str, Any]:
    path = campaign(tmp_path)
    states, ids = stored_after(path)
    (tmp_path / "data" / "products.csv").write_text(edited)
    manifest, specs = prepare(path)
    return diff_plan(make_plan(manifest, specs), states, ids=ids).__dict__


def test_a_row_added_is_new_jobs_a_row_removed_is_removed_and_an_edited_row_is_changed(
    tmp_path: Path,
) -> None:
    added = diff_after_edit(tmp_path, PRODUCTS + "0100,Neu,5,yes\n")
    assert (added["new"], added["changed"], added["unchanged"], added["removed"]) == (2, 0, 4, 0)
    removed = diff_after_edit(tmp_path, PRODUCTS.replace('0071,"Glas, klar",8,yes\n', ""))
    assert (removed["new"], removed["changed"], removed["unchanged"], removed["removed"]) == (0, 0, 2, 2)
    edited = diff_after_edit(tmp_path, PRODUCTS.replace('"Glas, klar",8', '"Glas, klar",9'))
    assert (edited["new"], edited["changed"], edited["unchanged"], edited["removed"]) == (0, 2, 2, 0)
    assert edited["new_credits"] == 8.0  # the two changed jobs are bought again
    unused = diff_after_edit(tmp_path, PRODUCTS.replace("0099,Alt,3,no", "0099,Alt,4,no"))
    assert (unused["new"], unused["changed"], unused["unchanged"]) == (0, 0, 4)  # a row no job uses


def test_plan_after_a_rehearsal_names_new_and_changed_rows_and_records_the_files_hash(tmp_path: Path) -> None:
    path = campaign(tmp_path)
    assert invoke("run", str(path), "--sandbox", "--yes", "--quiet").code == 0
    (tmp_path / "data" / "products.csv").write_text(PRODUCTS.replace("8,yes", "9,yes") + "0100,Neu,5,yes\n")
    shown = invoke("plan", str(path), "--sandbox")
    assert (
        "since the last run: 2 new, 2 changed (request edited: bought again), 2 unchanged (already paid)"
        in shown.out
    )
    document = json.loads(invoke("plan", str(path), "--sandbox", "--json").out)
    digest = hashlib.sha256((tmp_path / "data" / "products.csv").read_bytes()).hexdigest()
    assert document["data"] == [{"path": "data/products.csv", "sha256": digest, "rows": 3}]
    report = json.loads(next((tmp_path / "reports" / "catalog").glob("*/report.json")).read_text())
    assert report["manifest"]["data"][0]["rows"] == 2 and len(report["manifest"]["data"][0]["sha256"]) == 64


def test_a_column_named_like_a_mapping_method_reads_the_column_and_a_method_is_refused(
    tmp_path: Path,
) -> None:
    text = CAMPAIGN.replace(
        "{{ product.name_de }} für {{ product.price }} €", "{{ product.copy }} {{ product.items }}"
    )
    data = "sku,copy,items,price,active\n007,Kopie,Dinge,1,yes\n"
    _, specs = prepare(campaign(tmp_path, data, text.replace("name_de", "copy")))
    assert {spec.request["prompt"] for spec in specs} == {
        "Kopie Dinge (de)",
        "Kopie Dinge (en)",
    }  # same each run
    broken = problems(campaign(tmp_path, data, text.replace("product.items", "product.values")))
    assert len(broken) == 1 and "writes the method 'values', not a value" in broken[0]


def test_exclude_and_include_name_rows_by_key_and_a_key_no_row_has_is_an_error(tmp_path: Path) -> None:
    text = CAMPAIGN.replace("  lang: [de, en]\n", "  lang: [de, en]\n  exclude: [{product: 7}]\n")
    found = problems(campaign(tmp_path, text=text))
    assert (
        len(found) == 1
        and "matrix.exclude[0].product: no row of 'product' has the key 7 (keys: 007, 0071)" in found[0]
    )
    included = CAMPAIGN.replace(
        "  lang: [de, en]\n", '  lang: [de, en]\n  include: [{product: "0071", lang: fr}]\n'
    )
    _, specs = prepare(campaign(tmp_path, text=included))
    assert "Glas, klar für 8 € (fr)" in {
        spec.request["prompt"] for spec in specs
    }  # the row itself, not its key


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        (
            "products.json",
            "[" * 100_000 + "]" * 100_000,
            "data/products.json:1:2: matrix.product: not usable JSON: nested too deeply",
        ),
        (
            "products.jsonl",
            '{"sku": ' + "9" * 5000 + "}\n",
            "data/products.jsonl:1:1: matrix.product: not usable JSON: Exceeds",
        ),
        ("products.jsonl", '{"sku": "007", "name_de": "\\ud800"}\n', "data/products.jsonl:1:"),
        (
            "products.csv",
            "sku,name_de,price,active\n007,a\x00b,1,yes\n",
            "data/products.csv:2:5: matrix.product: name_de: holds a NUL character",
        ),
    ],
)
def test_data_no_json_or_text_can_carry_is_a_located_error(
    tmp_path: Path, name: str, data: str, expected: str
) -> None:
    found = problems(campaign(tmp_path, data, CAMPAIGN.replace("products.csv", name), name))
    assert any(line.replace(str(tmp_path) + os.sep, "").startswith(expected) for line in found), found


def test_numbers_keep_every_digit_and_a_unicode_line_separator_ends_no_row(tmp_path: Path) -> None:
    data = "sku,name_de,price,active\n007,Zeile\u2028zwei,9007199254740993,yes\n"
    _, specs = prepare(campaign(tmp_path, data))
    assert specs[0].request["prompt"] == "Zeile\u2028zwei für 9007199254740993 € (de)"


def test_a_bad_data_bound_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("validate", str(campaign(tmp_path)), env={"SUME_BATCH_MAX_DATA": "garbage"})
    assert result.code == 2 and "SUME_BATCH_MAX_DATA='garbage': not a size" in result.err
