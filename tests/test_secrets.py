"""Secrets: planted everywhere the sandbox can echo them, found in zero bytes of anything we write.

The API key, a bearer token, a signed URL and emails go into prompts and scripts (so the sandbox's
`echo_input` returns them in job objects, failure messages, details and results), the sandbox adds
its raw provider payloads (an email and a provider token), signed media and upload URLs, object keys
and the account's email and workspace, user and key ids. Then every sink is read byte for byte:
stdout and stderr of `run`, `status` and `report` in real processes, run.log, every report, the
saved results, and the run store's own files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
from helpers import REPO, read_report, write

from sume_batch.sandbox import PLANTED_EMAIL, PLANTED_PROVIDER_TOKEN, SandboxConfig, running_sandbox

KEY = "sume_test_PLANTEDkey0123456789abcdef"
BEARER = "eyJhbGciOiJIUzI1NiJ9.UExBTlRFRHBheWxvYWQ.PLANTEDsig0123456789"
CREDENTIAL, SIGNATURE = "AKIAPLANTEDCRED0001", "deadbeefPLANTEDsignature0001"
SIGNED = f"https://www.tiktok.com/@glow/video/7301234567890123456?X-Amz-Credential={CREDENTIAL}&X-Amz-Signature={SIGNATURE}"
EMAIL = "planted.person@brand-secret.example"
PLANTED = f"Authorization: Bearer {BEARER} key {KEY} mail {EMAIL} ref {SIGNED}"
SECRETS = {
    "api key": KEY, "api key id": "key_" + hashlib.sha256(KEY.encode()).hexdigest()[:12],
    "bearer token": BEARER.rsplit(".", 1)[-1], "signed URL credential": CREDENTIAL,
    "signed URL signature": SIGNATURE, "email": EMAIL, "provider email": PLANTED_EMAIL,
    "provider token": PLANTED_PROVIDER_TOKEN, "account email": "sandbox.owner@example.com",
    "user id": "user_sandbox01",
    "sandbox media signature": "X-Amz-Signature=", "sandbox media credential": "SANDBOXAKIAEXAMPLE7Q",
}  # fmt: skip

CAMPAIGN = f"""\
version: 1
name: leaky
budget: {{max_credits: 5000}}
execution:
  concurrency: 4
  poll_interval: {{image: 0.05, video: 0.05, ad_video: 0.05, face_swap: 0.05, reference_analysis: 0.05, asset_upload: 0.05}}
defaults:
  video: {{duration: 4, resolution: 480p}}
jobs:
  - id: "still-{{{{ n }}}}"
    type: image
    prompt: "Take {{{{ n }}}}: {PLANTED}"
    matrix: {{n: [1, 2, 3, 4, 5, 6, 7, 8]}}
  - {{id: clip, type: video, prompt: "Pan. {PLANTED}"}}
  - {{id: ad, type: ad_video, avatar_id: avatar_maya01, script: "Say: {PLANTED}"}}
  - {{id: swap, type: face_swap, source_video: clip.mp4, avatar_ids: [avatar_maya01, avatar_sofia03]}}
  - {{id: ref, type: reference_analysis, url: "{SIGNED}"}}
  - {{id: ingest, type: asset_upload, file: clip.mp4, title: "{EMAIL}"}}
"""


def forms(secret: str) -> set[bytes]:
    """The ways a secret could be written: as is, and URL- or JSON-escaped."""
    return {form.encode() for form in (secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1])}


def leaks(data: bytes) -> list[str]:
    return sorted(name for name, secret in SECRETS.items() if any(form in data for form in forms(secret)))


def cli(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sume_batch", *args], cwd=folder, env={**os.environ, **env}, capture_output=True,
        timeout=120, check=False,
    )  # fmt: skip


def test_planted_secrets_reach_no_output_report_log_or_store(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    shutil.copy(REPO / "tests/data/clip.mp4", tmp_path / "clip.mp4")
    config = SandboxConfig.from_profile(
        "instant", seed=5, api_keys=[KEY], echo_input=True, signed_media_rate=1.0,
        faults={"job_failed": 0.35, "leaky_error": 1.0},
    )  # fmt: skip
    outputs: dict[str, bytes] = {}
    with running_sandbox(config) as server:
        env = {"SUME_API_KEY": KEY, "SUME_API_BASE_URL": server.base_url}
        run = cli(tmp_path, env, "--debug", "run", "campaign.yaml", "--yes")
        assert run.returncode == 1, run.stderr  # some jobs failed, as planted
        for name, args in {
            "run": (), "status": ("status", "campaign.yaml"), "status --json": ("status", "campaign.yaml", "--json"),
            "report": ("report", "campaign.yaml"), "report by store": ("report", ".sume-batch/leaky.sqlite"),
        }.items():  # fmt: skip
            done = run if name == "run" else cli(tmp_path, env, *args)
            assert done.returncode in (0, 1), done.stderr
            outputs[f"{name}: stdout"], outputs[f"{name}: stderr"] = done.stdout, done.stderr
        # The control: the API really did hand every planted secret to the client.
        served = httpx.get(f"{server.base_url}/jobs?limit=100", headers={"Authorization": f"Bearer {KEY}"}).content
        served += httpx.get(f"{server.base_url}/me", headers={"Authorization": f"Bearer {KEY}"}).content
    assert leaks(served) == sorted(SECRETS)
    files = [path for path in tmp_path.rglob("*") if path.is_file() and path.suffix not in (".yaml", ".png", ".mp4")]
    names = {path.relative_to(tmp_path).as_posix() for path in files}
    assert {"reports/leaky/latest/report.json", "reports/leaky/latest/run.log", ".sume-batch/leaky.sqlite"} <= {
        name.replace(read_report(tmp_path, "leaky")["run"]["id"], "latest") for name in names
    }  # fmt: skip
    for path in files:
        outputs[path.relative_to(tmp_path).as_posix()] = path.read_bytes()
    found = {sink: leaks(data) for sink, data in outputs.items() if leaks(data)}
    assert found == {}
    report = read_report(tmp_path, "leaky")
    text = json.dumps(report)
    assert "<redacted:key>" in text and "<redacted:email>" in text and "Bearer <redacted:token>" in text
    assert any(job["failure"] for job in report["jobs"]) and any(job["files"] for job in report["jobs"])
