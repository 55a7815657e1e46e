"""Benchmark `sume-batch plan` and `validate`'s start (issue 13, cause 5); excluded from the test run.

    .venv/bin/python tests/perf/bench_plan.py [VARIANTS] [--excludes N]   # a generated manifest
    .venv/bin/python tests/perf/bench_plan.py --manifest manifests/spring-launch.yaml
    .venv/bin/python tests/perf/bench_plan.py --startup [--importtime]    # validate, median of 10
    .venv/bin/python tests/perf/bench_plan.py --csv 100000                # a data axis of 100k CSV rows

The generated manifest has VARIANTS image variants (100 products × 3 ratios × VARIANTS/300 scenes)
plus 300 video variants; `--excludes N` adds N exclude rows to the image job's matrix (each names a
product and a scene). Plan runs print the wall time, the CPU time and the peak RSS of the `plan`
process (aim: 100,000 variants in < 5 s and < 250 MB); `--startup` runs `validate` of the manifest
(spring-launch by default) ten times and prints the median wall time (aim: ≤ 150 ms) and, with
`--importtime`, the twelve slowest imports (`python -X importtime`, cumulative). `--source DIR`
runs the sume_batch package found in DIR (a checkout of an older commit, to compare). On a shared
machine compare CPU times, and run the two checkouts in turns. `--csv ROWS` plans one image job
over a data axis of ROWS CSV rows (typed, keyed, filtered: issue 14), then, as its peer, the generated
manifest of as many variants from inline axes (ROWS rows inline would pass the 4 MiB manifest bound).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = """\
version: 1
name: bench
vars:
  brand: Lumen
matrix:
  product: [{products}]
  ratio: ["1:1", "4:5", "9:16"]
budget:
  max_jobs: {limit}
jobs:
  - id: "img-{{{{ product }}}}-{{{{ ratio | replace(':', 'x') }}}}-{{{{ scene }}}}"
    type: image
    prompt: "Studio photo of the {{{{ brand }}}} {{{{ product }}}} in a {{{{ scene }}}} setting, soft light."
    aspect_ratio: "{{{{ ratio }}}}"
    matrix:
      scene: [{scenes}]
      exclude: [{excludes}]
  - id: "vid-{{{{ product }}}}-{{{{ ratio | replace(':', 'x') }}}}"
    type: video
    prompt: "{{{{ product }}}} turning on a plinth"
    duration: 5
    resolution: 480p
"""
ROOT = Path(__file__).resolve().parents[2]

DATA_MANIFEST = """\
version: 1
name: bench-data
budget: {{max_jobs: {limit}}}
matrix:
  product: {axis}
jobs:
  - id: "img-{{{{ product.sku }}}}"
    type: image
    prompt: "Studio photo of {{{{ product.name_de }}}} at {{{{ product.price }}}} EUR, soft light."
"""


def bench_csv(rows: int, *, source: Path) -> None:
    """Plan a data axis of `rows` CSV rows, then the same rows inline in the manifest (the peer)."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "products.csv"
        lines = ["sku,name_de,price,active"]
        lines += [f"{n:07d},Gesichtsserum Grün Nr. {n},{n % 50 + 0.5},yes" for n in range(rows)]
        data.write_text("\n".join(lines) + "\n", "utf-8")
        axis = (
            "{from: products.csv, key: sku, where: {active: true}, columns: {price: number, active: boolean}}"
        )
        path = Path(folder) / "data.yaml"
        path.write_text(DATA_MANIFEST.format(limit=rows * 2, axis=axis))
        print(f"data axis ({data.stat().st_size / 1e6:.1f} MB CSV):")
        bench_plan(path, source=source)
        path.write_text(generated(rows, 0))  # the rows inline would pass the 4 MiB manifest bound
        print("peer: the generated manifest of as many variants from inline axes:")
        bench_plan(path, source=source)


def generated(variants: int, excludes: int) -> str:
    products, scenes = 100, max(1, variants // 300)
    return MANIFEST.format(
        products=", ".join(f"p{i}" for i in range(products)),
        scenes=", ".join(f"s{i}" for i in range(scenes)),
        excludes=", ".join(f"{{product: p{i % products}, scene: s{i % scenes}}}" for i in range(excludes)),
        limit=variants * 2,
    )


def run_sume_batch(
    args: list[str], *, source: Path, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, *flags, "-m", "sume_batch", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=source, env=env)


def bench_plan(path: Path, *, source: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = run_sume_batch(["plan", str(path.resolve())], source=source)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(result.stderr)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    jobs = result.stdout.splitlines()[0]
    print(f"{jobs}\nwall {elapsed:.2f} s, cpu {cpu:.2f} s, peak RSS {after.ru_maxrss / 1024:.0f} MB")


def bench_startup(path: Path, *, source: Path, importtime: bool) -> None:
    walls = []
    for _ in range(10):
        started = time.perf_counter()
        result = run_sume_batch(["validate", str(path.resolve())], source=source)
        walls.append(time.perf_counter() - started)
        if result.returncode != 0:
            sys.exit(result.stderr)
    print(f"validate {path.name}: median {statistics.median(walls) * 1000:.0f} ms, "
          f"min {min(walls) * 1000:.0f} ms (of 10)")  # fmt: skip
    if importtime:
        args, flags = ["validate", str(path.resolve())], ("-X", "importtime")
        print_importtime([run_sume_batch(args, source=source, flags=flags).stderr for _ in range(5)])


def print_importtime(logs: list[str], shown: int = 12) -> None:
    """The slowest imports by cumulative time, each module's least of several runs (ms, as
    `-X importtime` has them: it inflates them)."""
    best: dict[str, tuple[int, int, int]] = {}  # module → (cumulative, self, depth)
    for log in logs:
        for line in log.splitlines():
            found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
            if found:
                row = (int(found[2]), int(found[1]), len(found[3]) // 2)
                best[found[4]] = min(best.get(found[4], row), row)
    top = sum(total for total, _, depth in best.values() if depth == 0)
    print(
        f"imports: {top / 1000:.0f} ms in all (least of {len(logs)} runs of -X importtime, which inflates them)"
    )
    for (total, own, depth), name in sorted(((row, name) for name, row in best.items()), reverse=True)[
        :shown
    ]:
        print(f"  {total / 1000:6.1f} ms (self {own / 1000:5.1f})  {'  ' * depth}{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="?", type=int, default=200_000)
    parser.add_argument("--excludes", type=int, default=0)
    parser.add_argument("--manifest", type=Path, help="plan this manifest instead of a generated one")
    parser.add_argument("--startup", action="store_true", help="time validate's start instead")
    parser.add_argument("--csv", type=int, metavar="ROWS", help="plan a data axis of ROWS CSV rows")
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout whose sume_batch runs")
    options = parser.parse_args()
    source = options.source.resolve()
    if options.startup:
        manifest = options.manifest or ROOT / "manifests" / "spring-launch.yaml"
        bench_startup(manifest, source=source, importtime=options.importtime)
    elif options.csv:
        bench_csv(options.csv, source=source)
    elif options.manifest:
        bench_plan(options.manifest, source=source)
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "bench.yaml"
            path.write_text(generated(options.variants, options.excludes))
            bench_plan(path, source=source)


if __name__ == "__main__":
    main()
