"""Benchmark: `sume-batch plan` on a generated 100,000-variant manifest (aim: < 5 s, < 250 MB).

Run: .venv/bin/python tests/perf/bench_plan.py [VARIANTS]
Prints wall time and the peak RSS of the `plan` process (excluded from the default test run).
"""

from __future__ import annotations

import resource
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
  - id: "vid-{{{{ product }}}}-{{{{ ratio | replace(':', 'x') }}}}"
    type: video
    prompt: "{{{{ product }}}} turning on a plinth"
    duration: 5
    resolution: 480p
"""


def main(variants: int) -> None:
    products, scenes = 100, max(1, variants // 300)
    text = MANIFEST.format(
        products=", ".join(f"p{i}" for i in range(products)),
        scenes=", ".join(f"s{i}" for i in range(scenes)),
        limit=variants * 2,
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.yaml"
        path.write_text(text)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "sume_batch", "plan", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if result.returncode != 0:
        sys.exit(result.stderr)
    jobs = result.stdout.splitlines()[0]
    print(f"{jobs}\nwall {elapsed:.2f} s, peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
