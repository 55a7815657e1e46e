"""The sandbox's books: the credit ledger, the idempotency record, and the counters tests read.

All three are plain in-memory objects owned by one `SandboxState` and reset with it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sume_batch.sandbox.envelope import SandboxError


@dataclass
class Ledger:
    """Credits reserved by live jobs, spent by completed ones, and refunded by failed ones."""

    reserved: int = 0
    spent: int = 0
    refunded: int = 0

    def remaining(self, allowance: int) -> int:
        """What is left of `allowance` (monthly + bonus) once spent and reserved credits are taken."""
        return allowance - self.spent - self.reserved

    def reserve(self, amount: int) -> None:
        """Hold credits for a job that was just accepted."""
        self.reserved += amount

    def settle(self, amount: int, *, completed: bool) -> None:
        """Turn a job's reservation into spending (completed) or give it back (any other end)."""
        self.reserved -= amount
        if completed:
            self.spent += amount
        else:
            self.refunded += amount


def body_hash(path: str, body: object) -> str:
    """A stable hash of one create request: its path and its JSON body with keys sorted."""
    canonical = json.dumps({"path": path, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredAnswer:
    """A committed create's answer, kept so the same `Idempotency-Key` gets it again."""

    request_hash: str
    status: int
    payload: dict[str, Any]


@dataclass
class IdempotencyBook:
    """Answers by (API key, Idempotency-Key); a key reused with another request is a 409."""

    answers: dict[tuple[str, str], StoredAnswer] = field(default_factory=dict)

    def replay(self, api_key: str, key: str, request_hash: str) -> StoredAnswer | None:
        """The stored answer for this key, None if the key is new; raises 409 if it was used differently."""
        stored = self.answers.get((api_key, key))
        if stored is None or stored.request_hash == request_hash:
            return stored
        raise SandboxError(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request.",
            {"idempotency_key": key},
        )

    def remember(self, api_key: str, key: str, answer: StoredAnswer) -> None:
        """Keep a committed answer for later replays."""
        self.answers[(api_key, key)] = answer


@dataclass
class Stats:
    """Counters for tests and benchmarks, served by `GET /_sandbox/stats`."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    creates_by_idempotency_key: Counter[str] = field(default_factory=Counter)
    creates_by_body_hash: Counter[str] = field(default_factory=Counter)
    idempotent_replays: int = 0
    storage_requests_with_credentials: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    unknown_fields: Counter[str] = field(default_factory=Counter)
    job_ids: list[str] = field(default_factory=list)

    def record_request(self, route: str, status: str) -> None:
        """Count one request by route template (`GET /api/v1/jobs/{job_id}`) and status (or its fate)."""
        self.requests[(route, status)] += 1

    def record_commit(self, idempotency_key: str | None, request_hash: str) -> None:
        """Count one create that committed work (replays are not commits)."""
        self.creates_by_idempotency_key[idempotency_key or "(none)"] += 1
        self.creates_by_body_hash[request_hash] += 1

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the stats endpoint (credits are added by the state, which knows the balance)."""
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self.requests.items()):
            by_route.setdefault(route, {})[status] = count
        return {
            "requests": by_route,
            "requests_total": sum(self.requests.values()),
            "creates_by_idempotency_key": dict(self.creates_by_idempotency_key),
            "creates_by_body_hash": dict(self.creates_by_body_hash),
            "idempotent_replays": self.idempotent_replays,
            "storage_requests_with_credentials": self.storage_requests_with_credentials,
            "faults": dict(self.faults),
            "unknown_fields": dict(self.unknown_fields),
            "job_ids": list(self.job_ids),
        }
