"""Secrets: planted everywhere the sandbox can echo them, found in zero bytes of anything we write.

The API key, bearer tokens (one with an underscore), a signed URL, emails, a workspace and a user
id of the usual shape, and the account's own workspace and user ids (which have no digit, so only
their value betrays them: `GET /me` said whose they are) go into prompts and scripts (so the
sandbox's `echo_input` returns them in job objects, failure messages, details and results); the
sandbox adds its raw provider payloads (an email and a provider token), signed media and upload
URLs, object keys and the account's email and key id. Then every sink is read byte for byte: stdout
and stderr of `run`, `status`, `report` and `plan` (text, `--json` and `-o`) in real processes,
run.log, every report, the saved results, and the run store's own files (-wal and -shm included).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
# Bearer tokens with an underscore (token68 allows one, RFC 7235): after a space, a line break (which
# comes back as the two characters `\n` where a message quotes the prompt's repr, or in JSON), a
# colon, and an encoded space in a URL path.
TOKEN, LOWER_TOKEN = "tok_PLANTED9", "pat_planted_under_score"
NEWLINE_TOKEN, COLON_TOKEN, ENCODED_TOKEN = "tok_NEWLINE9", "tok_COLON9", "tok_ENCODED9"
# The account `GET /me` describes: ids without a digit, so only their value tells them from words.
WORKSPACE, USER, ACCOUNT_EMAIL = "ws_acmeprod", "usr_janedoe", "jane.doe@acme-prod.example"
KEY_ID = "key_" + hashlib.sha256(KEY.encode()).hexdigest()[:12]  # the sandbox's id for KEY
PLANTED = (
    f"Authorization: Bearer {BEARER} key {KEY} mail {EMAIL} ref {SIGNED}; then Bearer {TOKEN}, bearer"
    f" {LOWER_TOKEN}, Bearer\\n{NEWLINE_TOKEN}, bearer: {COLON_TOKEN},"
    f" https://cdn.example.com/a/Bearer%20{ENCODED_TOKEN}/b.png; for {WORKSPACE} by {USER}"
    f" ({WORKSPACE}/{USER}, {ACCOUNT_EMAIL}, {KEY_ID}); owners ws_PLANTED01 user_planted02"
)
SECRETS = {
    "api key": KEY, "api key id": KEY_ID, "bearer token": BEARER.rsplit(".", 1)[-1],
    "underscore token": TOKEN, "lower-case underscore token": LOWER_TOKEN,
    "token after a line break": NEWLINE_TOKEN, "token after a colon": COLON_TOKEN,
    "URL-encoded token": ENCODED_TOKEN, "signed URL credential": CREDENTIAL,
    "signed URL signature": SIGNATURE, "email": EMAIL, "provider email": PLANTED_EMAIL,
    "provider token": PLANTED_PROVIDER_TOKEN, "account email": ACCOUNT_EMAIL,
    "account workspace id": WORKSPACE, "account user id": USER, "workspace id": "ws_PLANTED01",
    "user id": "user_planted02",
    "sandbox media signature": "X-Amz-Signature=", "sandbox media credential": "SANDBOXAKIAEXAMPLE7Q",
}  # fmt: skip
# `plan` is offline: it never asks `GET /me`, so to it the account's digitless ids in the manifest
# are words like `ws_client`. Every other secret must be gone from its output as from `run`'s.
ACCOUNT_ONLY = frozenset({"account workspace id", "account user id"})
EVERY = frozenset(SECRETS)

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
    return {
        form.encode()
        for form in (secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1])
    }


def leaks(data: bytes, *, known: frozenset[str] = EVERY) -> list[str]:
    """The names of the `known` secrets found in `data`, in any of their forms."""
    return sorted(name for name in known if any(form in data for form in forms(SECRETS[name])))


def cli(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sume_batch", *args], cwd=folder, env={**os.environ, **env}, capture_output=True,
        timeout=120, check=False,
    )  # fmt: skip


def watched(
    folder: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[bytes], dict[str, list[str]]]:
    """`cli`, reading the store's -wal and -shm files over and over while it runs (its last close
    checkpoints and deletes them): the secrets seen in each file read."""
    seen: dict[str, set[str]] = {}
    with subprocess.Popen(
        [sys.executable, "-m", "sume_batch", *args], cwd=folder, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as process, ThreadPoolExecutor(1) as pool:  # fmt: skip
        reader = pool.submit(process.communicate, timeout=120)
        while not reader.done():
            for path in [*folder.glob(".sume-batch/*-wal"), *folder.glob(".sume-batch/*-shm")]:
                with contextlib.suppress(FileNotFoundError):
                    data = path.read_bytes()
                    seen.setdefault(f"{path.relative_to(folder).as_posix()}, while the run went", set())
                    seen[f"{path.relative_to(folder).as_posix()}, while the run went"].update(leaks(data))
            time.sleep(0.01)
        stdout, stderr = reader.result()
    completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return completed, {sink: sorted(names) for sink, names in seen.items()}


def test_planted_secrets_reach_no_output_report_log_or_store(tmp_path: Path) -> None:
    write(tmp_path, CAMPAIGN)
    shutil.copy(REPO / "tests/data/clip.mp4", tmp_path / "clip.mp4")
    config = SandboxConfig.from_profile(
        "instant", seed=5, api_keys=[KEY], echo_input=True, signed_media_rate=1.0,
        faults={"job_failed": 0.35, "leaky_error": 1.0}, workspace_id=WORKSPACE, user_id=USER,
        user_email=ACCOUNT_EMAIL,
    )  # fmt: skip
    outputs: dict[str, bytes] = {}
    with running_sandbox(config) as server:
        env = {"SUME_API_KEY": KEY, "SUME_API_BASE_URL": server.base_url}
        run, found = watched(tmp_path, env, "--debug", "run", "campaign.yaml", "--yes")
        assert run.returncode == 1, run.stderr  # some jobs failed, as planted
        store = next(tmp_path.glob(".sume-batch/*.sqlite")).relative_to(tmp_path).as_posix()
        for name, args in {
            "run": (), "status": ("status", "campaign.yaml"), "status --json": ("status", "campaign.yaml", "--json"),
            "report": ("report", "campaign.yaml"), "report by store": ("report", store),
            "plan": ("plan", "campaign.yaml"), "plan --json": ("plan", "campaign.yaml", "--json"),
            "plan -o": ("plan", "campaign.yaml", "-o", "plan.json"),
        }.items():  # fmt: skip
            done = run if name == "run" else cli(tmp_path, env, *args)
            assert done.returncode in (0, 1), done.stderr
            outputs[f"{name}: stdout"], outputs[f"{name}: stderr"] = done.stdout, done.stderr
        # The control: the API really did hand every planted secret to the client.
        auth = {"Authorization": f"Bearer {KEY}"}
        served = httpx.get(f"{server.base_url}/jobs?limit=100", headers=auth).content
        served += httpx.get(f"{server.base_url}/me", headers=auth).content
    assert leaks(served) == sorted(SECRETS)
    assert {f"{store}-wal, while the run went", f"{store}-shm, while the run went"} <= set(found)
    files = [path for path in tmp_path.rglob("*") if path.is_file() and path.suffix not in (".yaml", ".png", ".mp4")]  # fmt: skip
    names = {path.relative_to(tmp_path).as_posix() for path in files}
    run_id = read_report(tmp_path, "leaky")["run"]["id"]
    expected = {"reports/leaky/latest/report.json", "reports/leaky/latest/run.log", store, "plan.json"}
    assert expected <= {name.replace(run_id, "latest") for name in names}
    for path in files:
        outputs[path.relative_to(tmp_path).as_posix()] = path.read_bytes()
    outputs["the names of files and folders"] = "\n".join(sorted(map(str, tmp_path.rglob("*")))).encode()
    for sink, data in outputs.items():
        found[sink] = leaks(data, known=EVERY - ACCOUNT_ONLY if sink.startswith("plan") else EVERY)
    leaked = {sink: names for sink, names in found.items() if names}
    assert leaked == {}, json.dumps(leaked, indent=1)
    report = read_report(tmp_path, "leaky")
    # `plan --json` shows a prompt as `run` stores and reports it, but for the ids only /me names.
    prompt = json.loads(outputs["plan --json: stdout"])["jobs"][0]["request"]["prompt"]
    for value in (WORKSPACE, USER):
        prompt = prompt.replace(value, "<redacted:id>")
    assert prompt == report["jobs"][0]["prompt"]
    text = json.dumps(report)
    assert "<redacted:key>" in text and "<redacted:email>" in text and "Bearer <redacted:token>" in text
    assert any(job["failure"] for job in report["jobs"]) and any(job["files"] for job in report["jobs"])
