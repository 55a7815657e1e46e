"""Edges of a run that once ended in a traceback or a wrong figure: a read-only state folder, a clock
that jumps, the resume hint's flags (issues 10 and 11; a negative capacity is in test_responses)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import invoke, tmpfs, write

from sume_batch.sandbox import SandboxConfig, running_sandbox

CAMPAIGN = (
    "version: 1\nname: edge\nexecution: {concurrency: 4, poll_interval: {image: 0.02}}\n"
    "jobs:\n  - {id: 'img-{{ n }}', type: image, prompt: 'p{{ n }}', matrix: {n: [1, 2, 3]}}\n"
)


def test_a_read_only_state_folder_is_a_clear_error(workdir: Path) -> None:
    write(workdir, CAMPAIGN)
    with (
        tmpfs(workdir / "state", "size=1m,ro") as state,
        running_sandbox(SandboxConfig.from_profile("instant")) as server,
    ):
        env = {"SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        result = invoke("run", "campaign.yaml", "--yes", "--state-dir", str(state), env=env)
        creates = server.stats()["creates_by_idempotency_key"]
    assert result.code == 2, result.err
    assert result.err.startswith(f"error: cannot keep the run store in {state}: ")
    assert "Traceback" not in result.err and creates == {}


def test_a_clock_jump_changes_no_duration_and_times_out_no_job(workdir: Path) -> None:
    import sys
    import textwrap

    write(workdir, CAMPAIGN)
    # The wall clock jumps back an hour once the run starts; intervals must not see it.
    (workdir / "jump.py").write_text(
        textwrap.dedent("""
        import sys, time
        real, start = time.time, time.time()
        time.time = lambda: real() - (3600 if real() - start > 0.3 else 0)
        from sume_batch.cli import main
        sys.argv = ["sume-batch", *sys.argv[1:]]
        main()
        """)
    )
    config = SandboxConfig.from_profile("instant", durations={"image_generation": 0.6})
    with running_sandbox(config) as server:
        import subprocess

        env = {**os.environ, "SUME_API_KEY": server.api_key, "SUME_API_BASE_URL": server.base_url}
        done = subprocess.run([sys.executable, "jump.py", "run", "campaign.yaml", "--yes"], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("Done in"))
    seconds = float(line.split()[2])
    assert 0 < seconds < 30, line


def test_the_resume_hint_repeats_every_flag_that_chose_the_target_and_the_store() -> None:
    from types import SimpleNamespace

    from sume_batch.commands.endpoint import Endpoint, Rehearsal
    from sume_batch.commands.run import Call, Options, resume_command
    from sume_batch.redact import Redactor
    from sume_batch.target import Target

    def hint(api: Endpoint, env: dict[str, str], **chosen: object) -> str:
        base: dict[str, object] = {"yes": True, "dry_run": False, "concurrency": None, "state_dir": None}
        options = Options(**{**base, "interactive": False, **chosen})  # type: ignore[arg-type]
        manifest = SimpleNamespace(path=Path("camp aign.yaml"))
        call = Call(manifest, None, api, options, Redactor(), print, bool, env)  # type: ignore[arg-type]
        return resume_command(call, Target(api.base_url, "", api.sandbox is not None))

    rehearsal = hint(
        Endpoint("http://127.0.0.1:1/api/v1", "k", Rehearsal("realistic")), {}, state_dir=Path("D")
    )
    assert rehearsal.startswith(
        "sume-batch run 'camp aign.yaml' --sandbox --sandbox-profile realistic --state-dir D"
    )
    large = Rehearsal("instant", seed=3, capacity=50, credits=100_000, speed=2.5)
    assert hint(Endpoint("http://127.0.0.1:1/api/v1", "k", large), {}).startswith(
        "sume-batch run 'camp aign.yaml' --sandbox --sandbox-profile instant --sandbox-seed 3 --sandbox-capacity 50"
        " --sandbox-credits 100000 --sandbox-speed 2.5 (a new embedded sandbox"
    )
    real = hint(Endpoint("https://staging.example/api/v1", "k"), {"SUME_API_BASE_URL": "https://staging.example/api/v1"},
                idempotency_honoured=True, assume_price=12.0)  # fmt: skip
    assert real == (
        "SUME_API_BASE_URL=https://staging.example/api/v1 sume-batch run 'camp aign.yaml' --idempotency-honoured"
        " --assume-price 12"
    )


def test_ctrl_c_while_the_command_loads_exits_130_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "interrupted.py"
    script.write_text(
        textwrap.dedent("""
        import sys

        class Interrupt:  # Ctrl-C arrives while click is being imported
            def find_spec(self, name, path=None, target=None):
                if name == "click":
                    raise KeyboardInterrupt
                return None

        sys.meta_path.insert(0, Interrupt())
        sys.argv = ["sume-batch", "--help"]
        from sume_batch.entry import main
        main()
        """)
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stderr) == (130, "Interrupted.\n")


def test_a_local_file_swapped_for_a_symlink_after_validate_is_never_uploaded(tmp_path: Path) -> None:
    import asyncio
    import shutil

    from helpers import REPO

    from sume_batch.commands.common import prepare
    from sume_batch.redact import Redactor
    from sume_batch.transfer import Transfers

    shutil.copy(REPO / "tests/data/clip.mp4", tmp_path / "clip.mp4")
    path = write(tmp_path, "version: 1\nname: up\njobs:\n  - {id: up, type: asset_upload, file: clip.mp4}\n")
    manifest, (spec,) = prepare(path)  # validated: clip.mp4 is a regular file inside the folder
    (tmp_path / "clip.mp4").unlink()
    (tmp_path / "clip.mp4").symlink_to("/etc/hostname")  # and then swapped
    transfers = Transfers(client=None, storage=None, store=None, redactor=Redactor(), folder=manifest.folder,  # type: ignore[arg-type]
                          downloads=tmp_path / "out", roots=manifest.roots)  # fmt: skip
    with pytest.raises(OSError, match="local files must be inside the manifest's folder"):
        asyncio.run(transfers.upload(spec))


def test_a_ctrl_c_while_the_process_winds_down_keeps_its_exit_code(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "late.py"
    script.write_text(
        textwrap.dedent("""
        import atexit, os, signal, sys, time

        def late_ctrl_c():  # a second Ctrl-C that lands while the process exits
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)

        atexit.register(late_ctrl_c)
        sys.argv = ["sume-batch", "--version"]
        from sume_batch.entry import main
        main()
        """)
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.startswith("sume-batch, version")
