"""A hostile API and a hostile media host, on loopback servers of this module's own (not the sandbox).

Endless and dripping bodies, rate-limit headers holding Unix times, a day-long Retry-After, wrong
types in every body, redirects to another port and media on another host: every run ends in bounded
time and memory with a documented exit code (never 70), no credential reaches anything but the API,
nothing is written outside the campaign's folders, and every job id the API returned is kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import invoke, write

from sume_batch.api import SumeClient
from sume_batch.bounds import Bounds, MiB
from sume_batch.errors import ApiError, BoundError, UncertainCreateError
from sume_batch.progress import Progress

KEY = "sume_test_HOSTILE_key_0001"
CAMPAIGN = """\
version: 1
name: hostile
execution:
  concurrency: 2
  timeouts: {image: 1}
  poll_interval: {image: 0.05}
output: {downloads: outputs, reports: reports}
jobs:
  - id: "img-{{ n }}"
    type: image
    prompt: "Bottle {{ n }}"
    matrix: {n: [1, 2]}
"""
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


# ---------------------------------------------------------------- the servers


@dataclass(frozen=True)
class Seen:
    """One request as a server received it."""

    port: int
    method: str
    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0].removeprefix("/api/v1")


@dataclass
class Reply:
    """An answer: bytes, or an async stream sent until the client goes (no length, `close`)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Callable[[], AsyncIterator[bytes]] = b""

    @classmethod
    def json(cls, value: Any, status: int = 200, **headers: str) -> Reply:
        fixed = {name.replace("_", "-"): text for name, text in headers.items()}
        return cls(status, {"content-type": "application/json", "x-request-id": "req_hostile", **fixed},
                   json.dumps(value).encode())  # fmt: skip


async def endless() -> AsyncIterator[bytes]:
    chunk = b"[" * 65536  # valid JSON so far: the parser must not be what stops it
    while True:
        yield chunk
        await asyncio.sleep(0)


def dripping(every: float) -> Callable[[], AsyncIterator[bytes]]:
    async def drip() -> AsyncIterator[bytes]:
        yield b'{"a": "'
        while True:
            await asyncio.sleep(every)
            yield b"x"

    return drip


class Server:
    """A loopback HTTP/1.1 server in a thread; `route` decides every answer, `seen` keeps every request."""

    def __init__(self, route: Callable[[Seen], Reply], host: str = "127.0.0.1") -> None:
        self.route, self.host, self.port = route, host, 0
        self.seen: list[Seen] = []
        self.sent = 0  # bytes of streamed bodies sent
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._connection, self.host, 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,
        ):
            pass  # the client went, or the server is shutting down
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (item.partition(":") for item in lines if item)}  # fmt: skip
        await reader.readexactly(int(headers.get("content-length", "0")))
        seen = Seen(self.port, method, target, headers)
        self.seen.append(seen)
        reply = self.route(seen)
        fixed = isinstance(reply.body, bytes)
        out = {**reply.headers, "connection": "keep-alive" if fixed else "close"}
        if isinstance(reply.body, bytes):
            out.setdefault("content-length", str(len(reply.body)))
        head = f"HTTP/1.1 {reply.status} Hostile\r\n" + "".join(f"{k}: {v}\r\n" for k, v in out.items())
        writer.write(head.encode() + b"\r\n")
        if isinstance(reply.body, bytes):
            writer.write(reply.body)
            await writer.drain()
            return True
        async for chunk in reply.body():
            writer.write(chunk)
            self.sent += len(chunk)
            await writer.drain()
        return False


Hook = Callable[[Seen], "Reply | dict[str, str] | None"]  # None: the normal answer; a dict: plus headers


class Api:
    """Just enough of the Sume API for a campaign of images; `hooks` (by route name) make it hostile.

    Route names: me, credits, create, job, jobs, result. A hook answering None leaves the normal answer."""

    def __init__(self, media: str, **hooks: Hook) -> None:
        self.media, self.hooks = media, hooks
        self.created: list[str] = []

    def __call__(self, seen: Seen) -> Reply:
        name = self.name(seen)
        hook = self.hooks.get(name)
        reply = hook(seen) if hook else None
        if isinstance(reply, dict):  # the normal answer with these headers
            normal = self.normal(name, seen)
            normal.headers.update(reply)
            return normal
        return reply if reply is not None else self.normal(name, seen)

    @staticmethod
    def name(seen: Seen) -> str:
        parts = seen.path.strip("/").split("/")
        if seen.method == "POST":
            return "create"
        if parts[0] == "jobs":
            return {1: "jobs", 2: "job"}.get(len(parts), "result")
        return parts[0]

    def normal(self, name: str, seen: Seen) -> Reply:
        job_id = seen.path.strip("/").split("/")[1] if name in ("job", "result") else ""
        if name == "create":
            self.created.append(f"job_h{len(self.created) + 1}")
            return Reply.json(
                {"object": "image_generation", "job": {"id": self.created[-1], "status": "queued"}}
            )
        answers: dict[str, Any] = {
            "me": {"object": "me", "plan": "pro", "workspace": {"id": "ws_hostile"}},
            "credits": {"object": "credits", "remaining_credits": 1000, "active_generation_capacity": 4},
            "job": {"object": "job", "id": job_id, "status": "completed", "type": "image_generation"},
            "jobs": {"object": "list", "data": [], "has_more": False, "next_cursor": None},
            "result": {"job_id": job_id, "result": {"images": [{"url": f"{self.media}/media/{job_id}.png"}]}},
        }
        return (
            Reply.json(answers[name])
            if name in answers
            else Reply.json({"error": {"code": "not_found"}}, 404)
        )


def media_route(hook: Hook | None = None) -> Callable[[Seen], Reply]:
    def route(seen: Seen) -> Reply:
        reply = hook(seen) if hook else None
        return reply if isinstance(reply, Reply) else Reply(200, {"content-type": "image/png"}, PNG)

    return route


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    seconds: float
    api: list[Seen]  # what each server received during this run
    media: list[Seen]
    created: list[str]


@pytest.fixture
def hostile(workdir: Path) -> Iterator[Callable[..., Outcome]]:
    """Run the campaign against an Api with these hooks (media on another host and port; both servers
    live for the whole test, so a second run talks to the same target) and check what must hold
    whatever the servers did."""
    write(workdir, CAMPAIGN)
    before = set(workdir.rglob("*"))
    media_hook: list[Hook | None] = [None]
    with Server(
        media_route(lambda seen: media_hook[0](seen) if media_hook[0] else None), host="127.0.0.2"
    ) as media:
        api = Api(media.origin)
        with Server(api) as server:

            def run(
                *,
                media: Hook | None = None,
                env: dict[str, str] | None = None,
                args: tuple[str, ...] = (),
                **hooks: Hook,
            ) -> Outcome:
                media_hook[0], api.hooks, api.created = media, hooks, []
                seen = (len(server.seen), len(media_server.seen))
                started = time.monotonic()
                env = {
                    "SUME_API_BASE_URL": server.origin + "/api/v1",
                    "SUME_API_KEY": KEY,
                    "SUME_BATCH_MAX_WAIT": "0.05",
                    **(env or {}),
                }  # fmt: skip  (backoffs kept short)
                result = invoke("run", "campaign.yaml", "--yes", *args, env=env)
                outcome = Outcome(result.code, result.out, result.err, time.monotonic() - started,
                                  server.seen[seen[0]:], media_server.seen[seen[1]:], api.created)  # fmt: skip
                assert outcome.code not in (70, 2), (
                    outcome.err
                )  # never "internal error", never "bad manifest"
                assert "Traceback" not in outcome.err + outcome.out and KEY not in outcome.err + outcome.out
                assert_credentials_only_for_the_api(outcome)
                written = {path.relative_to(workdir).parts[0] for path in set(workdir.rglob("*")) - before}
                assert written <= {"outputs", "reports", ".sume-batch"}, written
                assert not list(workdir.rglob("*.part")), "a failed download left its .part behind"
                assert set(outcome.created) <= stored_ids(workdir), "a job id the API returned was lost"
                return outcome

            media_server = media
            yield run


def assert_credentials_only_for_the_api(outcome: Outcome) -> None:
    assert outcome.api and all(seen.headers.get("authorization") == f"Bearer {KEY}" for seen in outcome.api)
    for seen in outcome.media:
        assert not {"authorization", "x-api-key", "cookie"} & set(seen.headers), seen
        assert KEY not in json.dumps(seen.headers) + seen.target


def stored_ids(folder: Path) -> set[str]:
    rows = []
    for store in folder.glob(".sume-batch/*.sqlite"):
        with sqlite3.connect(store) as db:
            rows += db.execute("SELECT sume_ids FROM jobs").fetchall()
    return {job_id for (ids,) in rows for job_id in json.loads(ids or "[]")}


def files(folder: Path) -> list[str]:
    return (
        sorted(path.name for path in (folder / "outputs").glob("*")) if (folder / "outputs").exists() else []
    )


# ---------------------------------------------------------------- the real CLI, in-process


def test_a_well_behaved_api_and_media_on_another_host_download_without_the_key(
    hostile: Any, workdir: Path
) -> None:
    outcome = hostile()
    assert outcome.code == 0, outcome.err
    assert files(workdir) == ["img-1.png", "img-2.png"] and len(outcome.media) == 2
    assert (workdir / "outputs/img-1.png").read_bytes() == PNG


def test_a_redirect_is_never_followed_so_the_key_never_reaches_the_other_port(hostile: Any) -> None:
    with Server(lambda seen: Reply.json({"object": "me"})) as elsewhere:
        outcome = hostile(me=lambda seen: Reply(302, {"location": f"{elsewhere.origin}/api/v1/me"}))
        assert elsewhere.seen == []
    assert outcome.code == 69
    assert (
        "GET /me: the API answered with a redirect" in outcome.err
        and "check SUME_API_BASE_URL" in outcome.err
    )
    assert len(outcome.api) == 1  # not retried either


def test_a_redirected_create_is_uncertain_never_resent_and_never_followed(hostile: Any) -> None:
    with Server(lambda seen: Reply.json({"job": {"id": "job_elsewhere"}})) as elsewhere:
        outcome = hostile(
            create=lambda seen: Reply(307, {"location": f"{elsewhere.origin}/api/v1/images/generations"}),
            args=("--lost-create-grace", "0"),
        )
        assert elsewhere.seen == []
    assert outcome.code == 1 and [seen.method for seen in outcome.api].count("POST") == 2  # one per job


def test_an_endless_media_body_stops_at_the_kinds_bound_and_the_next_run_downloads_it(
    hostile: Any, workdir: Path
) -> None:
    endless_media = lambda seen: Reply(200, {"content-type": "image/png"}, endless)  # noqa: E731
    outcome = hostile(media=endless_media, env={"SUME_BATCH_MAX_DOWNLOAD": "image=1MiB"})
    assert outcome.code == 1 and outcome.seconds < 10 and files(workdir) == []
    assert len(outcome.media) == 2  # one try each: a bound is not retried
    assert "is larger than 1 MiB (SUME_BATCH_MAX_DOWNLOAD sets the bound for image jobs)" in read_messages(
        workdir
    )
    again = hostile()
    assert again.code == 0 and files(workdir) == ["img-1.png", "img-2.png"] and again.created == []


def test_a_dripping_media_body_hits_the_download_deadline(hostile: Any, workdir: Path) -> None:
    drip = lambda seen: Reply(200, {"content-type": "image/png"}, dripping(0.2))  # noqa: E731
    outcome = hostile(media=drip, env={"SUME_BATCH_DOWNLOAD_DEADLINE": "image=1"})
    assert outcome.code == 1 and outcome.seconds < 10 and files(workdir) == []
    assert (
        "took longer than 1 s (SUME_BATCH_DOWNLOAD_DEADLINE sets the bound for image jobs)"
        in read_messages(workdir)
    )


def test_a_dripping_job_poll_times_out_per_request_and_the_job_ids_are_kept(
    hostile: Any, workdir: Path
) -> None:
    outcome = hostile(
        job=lambda seen: Reply(200, {"x-request-id": "req_drip"}, dripping(0.2)),
        env={"SUME_BATCH_REQUEST_DEADLINE": "0.5"},
    )
    assert outcome.code == 1 and outcome.seconds < 15, outcome.err
    assert len(outcome.created) == 2 and stored_ids(workdir) == set(outcome.created)
    assert "timed_out" in outcome.out


def read_messages(folder: Path) -> str:
    messages = []
    for store in folder.glob(".sume-batch/*.sqlite"):
        with sqlite3.connect(store) as db:
            messages += [str(message) for (message,) in db.execute("SELECT error_message FROM jobs")]
    return " ".join(messages)


def test_rate_limit_resets_sent_as_unix_times_are_waited_for_not_for_56_years(hostile: Any) -> None:
    def soon(seen: Seen) -> dict[str, str]:  # a Unix time a second away: waited for, about a second
        return {"ratelimit-remaining": "0", "ratelimit-reset": f"{time.time() + 1:.0f}"}

    def year_2100(seen: Seen) -> dict[str, str]:  # 75 years away: capped by SUME_BATCH_MAX_WAIT
        return {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "4102444800"}

    outcome = hostile(credits=soon, create=year_2100, env={"SUME_BATCH_MAX_WAIT": "0.5"})
    assert outcome.code == 0 and outcome.seconds < 10, outcome.err
    assert len(outcome.created) == 2


def test_a_day_long_retry_after_is_capped(hostile: Any) -> None:
    asked: list[int] = []

    def once(seen: Seen) -> Reply | None:
        asked.append(1)
        return (
            Reply.json({"error": {"code": "rate_limit_exceeded"}}, 429, retry_after="86400")
            if len(asked) == 1
            else None
        )

    outcome = hostile(credits=once, create=once, env={"SUME_BATCH_MAX_WAIT": "0.3"})
    assert outcome.code == 0 and outcome.seconds < 10, outcome.err


def test_a_429_that_never_ends_gives_up_with_exit_69_in_bounded_time(hostile: Any) -> None:
    def always(seen: Seen) -> Reply:
        return Reply.json(
            {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}, 429, retry_after="86400"
        )

    outcome = hostile(me=always, env={"SUME_BATCH_MAX_WAIT": "0.1"})
    assert outcome.code == 69 and outcome.seconds < 10
    assert outcome.err.strip() == "error: HTTP 429: rate_limit_exceeded: slow down (request id req_hostile)"


def test_an_unreachable_api_exits_69_naming_the_request(workdir: Path) -> None:
    write(workdir, CAMPAIGN)
    with Server(lambda seen: Reply()) as gone:
        origin = gone.origin
    result = invoke("run", "campaign.yaml", "--yes", env={
        "SUME_API_BASE_URL": origin + "/api/v1", "SUME_API_KEY": KEY, "SUME_BATCH_MAX_WAIT": "0.05"})  # fmt: skip
    assert result.code == 69 and result.err.startswith(
        "error: GET /me: could not connect to the API (ConnectError"
    )


def test_a_bad_bound_setting_is_a_usage_error(workdir: Path) -> None:
    write(workdir, CAMPAIGN)
    result = invoke("run", "campaign.yaml", "--yes", env={
        "SUME_API_BASE_URL": "http://127.0.0.1:9/api/v1", "SUME_API_KEY": KEY, "SUME_BATCH_MAX_DOWNLOAD": "imgae=1MiB"})  # fmt: skip
    assert (result.code, result.err) == (
        2, "error: SUME_BATCH_MAX_DOWNLOAD: unknown job type 'imgae' (expected one of image, video, ad_video,"
        " face_swap, reference_analysis, asset_upload)\n")  # fmt: skip


WRONG = [None, "12", ["completed"], 3.5, {"id": ["x"]}, True]


def wrong_everywhere(value: Any) -> dict[str, Hook]:
    """Every field of every answer replaced by `value` (the create keeps its id, so it is not lost)."""

    def fields(keys: tuple[str, ...], **kept: Any) -> Hook:
        return lambda seen: Reply.json({**{key: value for key in keys}, **kept})

    job_id = lambda seen: seen.path.strip("/").split("/")[1]  # noqa: E731
    return {
        "me": fields(("object", "plan", "workspace", "user", "api_key")),
        "credits": fields(("object", "remaining_credits", "balance", "active_generation_capacity", "plan")),
        "job": lambda seen: Reply.json(
            {
                "id": job_id(seen),
                "status": value,
                "type": value,
                "error": value,
                "object": value,
                "created_at": value,
            }
        ),
        "jobs": fields(("object", "data", "has_more", "next_cursor")),
        "result": fields(("job_id", "result", "images", "video", "media_url", "url")),
    }


@pytest.mark.parametrize("value", WRONG, ids=repr)
def test_wrong_types_in_every_answer_never_crash_nor_hang(hostile: Any, value: Any) -> None:
    outcome = hostile(**wrong_everywhere(value))
    assert outcome.code in (0, 1, 3, 69) and outcome.seconds < 15, (
        outcome.err
    )  # 3: refused (a balance of 3.5)


@pytest.mark.parametrize(
    "body",
    [
        b"null",
        b"[]",
        b'"job"',
        b"<html>502</html>",
        b"[" * 100_000,
        b'{"a": ' + b"1" * 5000 + b"}",
        b"\xff\xfe",
    ],
    ids=["null", "list", "string", "html", "deep", "huge-number", "not-utf8"],
)
def test_a_garbage_account_answer_exits_69(hostile: Any, body: bytes) -> None:
    outcome = hostile(me=lambda seen: Reply(200, {"content-type": "application/json"}, body))
    assert outcome.code == 69 and "GET /me" in outcome.err, outcome.err


# ---------------------------------------------------------------- the real CLI, as a process (memory)


def run_process(
    folder: Path, base_url: str, *, limit_bytes: int | None = None, **env: str
) -> tuple[int, str, float, float]:
    """`sume-batch run` in a child: exit code, stderr, seconds and peak RSS in MiB (its own, by wait4)."""

    def limits() -> None:
        if limit_bytes is not None:  # a full disk, as far as the child can tell (EFBIG instead of ENOSPC)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    command = [sys.executable, "-m", "sume_batch", "run", "campaign.yaml", "--yes"]
    full_env = {**os.environ, "SUME_API_BASE_URL": base_url, "SUME_API_KEY": KEY, **env}
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=folder, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             preexec_fn=limits)  # fmt: skip  # noqa: PLW1509
    timer = threading.Timer(40, child.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    with child.stderr or open(os.devnull, "rb") as stream:
        err = stream.read().decode()
    return child.returncode, err, time.monotonic() - started, usage.ru_maxrss / 1024


def test_an_endless_api_body_stops_at_16_mib_in_bounded_memory(workdir: Path) -> None:
    write(workdir, CAMPAIGN)
    with Server(lambda seen: Reply(200, {"content-type": "application/json"}, endless)) as api:
        code, err, seconds, rss = run_process(workdir, api.origin + "/api/v1")
        sent = api.sent
    assert code == 69 and seconds < 15 and rss < 250, (code, err, seconds, rss)
    assert (
        err
        == "error: GET /me: the answer is larger than 16 MiB, so it was not read; SUME_BATCH_MAX_BODY sets the bound\n"
    )
    assert sent < 64 * MiB  # it stopped reading, so the server stopped sending


def test_a_dripping_api_body_hits_the_total_deadline_and_names_the_request(workdir: Path) -> None:
    write(workdir, CAMPAIGN)
    drip = lambda seen: Reply(200, {"x-request-id": "req_drip1"}, dripping(0.3))  # noqa: E731
    with Server(drip) as api:
        code, err, seconds, _ = run_process(workdir, api.origin + "/api/v1", SUME_BATCH_REQUEST_DEADLINE="1")
    assert code == 69 and seconds < 10, (code, err, seconds)
    assert (
        err
        == "error: GET /me timed out: no whole answer within 1 s (SUME_BATCH_REQUEST_DEADLINE sets the bound) (request id req_drip1)\n"
    )


def test_a_full_disk_leaves_no_part_files_and_the_next_run_finishes(workdir: Path) -> None:
    big = b"\x89PNG" + os.urandom(3 * MiB)
    write(workdir, CAMPAIGN)
    with Server(
        media_route(lambda seen: Reply(200, {"content-type": "image/png"}, big)), host="127.0.0.2"
    ) as media:
        api = Api(media.origin)
        with Server(api) as server:
            code, err, _, _ = run_process(workdir, server.origin + "/api/v1", limit_bytes=2 * MiB)
            assert code == 1, err
            assert files(workdir) == [] and not list(workdir.rglob("*.part"))
            assert stored_ids(workdir) == set(api.created) and len(api.created) == 2
            code, err, _, _ = run_process(workdir, server.origin + "/api/v1")
    assert code == 0, err
    assert files(workdir) == ["img-1.png", "img-2.png"] and len(api.created) == 2  # nothing bought twice


# ---------------------------------------------------------------- the client itself


def client_against(server: Server, **options: Any) -> tuple[httpx.AsyncClient, SumeClient]:
    http = httpx.AsyncClient(timeout=30)
    return http, SumeClient(http, api_key=KEY, base_url=server.origin + "/api/v1", **options)


def test_a_create_that_times_out_after_sending_is_uncertain_and_sent_once() -> None:
    drip = lambda seen: Reply(200, {"x-request-id": "req_slowcreate"}, dripping(0.2))  # noqa: E731

    async def main(server: Server) -> None:
        http, client = client_against(server, bounds=Bounds(request_seconds=0.5))
        async with http:
            with pytest.raises(UncertainCreateError) as caught:
                await client.create("/images/generations", {"prompt": "p"}, idempotency_key="k")
        assert "POST /images/generations timed out: no whole answer within 0.5 s" in str(caught.value)
        assert caught.value.request_id == "req_slowcreate" and client.requests == 1

    with Server(drip) as server:
        asyncio.run(main(server))
        assert len(server.seen) == 1


def test_a_halt_ends_a_long_rate_limit_wait_at_once_and_the_progress_line_says_until_when() -> None:
    reset = f"{time.time() + 10**9:.0f}"  # a Unix time 31 years away
    paced = lambda seen: Reply.json({"object": "me"}, ratelimit_remaining="0", ratelimit_reset=reset)  # noqa: E731
    lines: list[str] = []

    async def main(server: Server) -> float:
        progress = Progress({}, echo=lines.append, wall=lambda: 0.0)
        http, client = client_against(server, bounds=Bounds(wait_seconds=3600), on_wait=progress.wait)
        async with http:
            await client.me()  # learns the window is spent until `reset`
            waiting = asyncio.ensure_future(client.me())
            await asyncio.sleep(0.2)
            lines.append(progress.line())
            started = time.monotonic()
            client.halt.set()
            await waiting  # a read still goes out once; a create would be withheld by the executor
            return time.monotonic() - started

    with Server(paced) as server:
        assert asyncio.run(main(server)) < 0.5
    until = {time.strftime("%H:%M:%S", time.localtime(second)) for second in (3599, 3600)}
    prefix, _, shown = lines[-1].rpartition(" until ")
    assert prefix.endswith("waiting: pacing reads to the rate limit before GET /me"), lines
    assert shown in {f"{moment} (59:59)" for moment in until}, lines


def test_a_halt_ends_a_day_long_retry_after_with_the_error_that_caused_it() -> None:
    def busy(seen: Seen) -> Reply:
        return Reply.json(
            {"error": {"code": "rate_limit_exceeded", "message": "busy"}}, 429, retry_after="86400"
        )

    async def main(server: Server) -> None:
        http, client = client_against(server, bounds=Bounds(wait_seconds=86400))
        async with http:
            asyncio.get_running_loop().call_later(0.2, client.halt.set)
            started = time.monotonic()
            with pytest.raises(ApiError) as caught:
                await client.credits()
            assert time.monotonic() - started < 1 and getattr(caught.value, "status", None) == 429

    with Server(busy) as server:
        asyncio.run(main(server))
        assert len(server.seen) == 1


def test_the_body_bound_applies_to_declared_and_undeclared_lengths() -> None:
    big = Reply(200, {"content-type": "application/json"}, b'{"a": "' + b"x" * 2000 + b'"}')

    async def main(server: Server) -> None:
        http, client = client_against(server, bounds=Bounds(body_bytes=1000))
        async with http:
            with pytest.raises(BoundError, match=r"GET /me: the answer is larger than 1000 bytes"):
                await client.me()
        assert client.requests == 1

    with Server(lambda seen: big) as server:
        asyncio.run(main(server))
