"""The budget: what a campaign may reserve, held against what the API says it charges.

Our prices are estimates (Sume publishes none), so the cap cannot trust them alone. The rules,
as the careful cost guards do it:

- Reserve before every create, the worst case known: the estimate × the highest ratio of stated
  to estimated credits seen for the job's kind (1 until the API states one). A job of unknown
  price reserves the bound the user stated (`--assume-price`), never 0.
- Settle to what the API states (`required_credits` in a create's answer): that price replaces the
  estimate for the job, and its ratio prices every later job of the kind (a stated price below the
  estimate, a free job say, never lowers what later jobs reserve).
- The first job of each kind whose price is not confirmed goes alone (see `Executor.submit`), so a
  wrong estimate overspends by at most one job per kind: after it, the API has stated a price, or
  the balance says what it cost.
- A reservation whose create's outcome is unknown is kept; one whose create was refused is freed.
- The cap covers the whole campaign at its target, across runs: what earlier runs reserved and
  what re-created jobs' earlier lives cost (`--regenerate`, `--retry-failed`) stay counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sume_batch.plan import credits
from sume_batch.records import StoredJob

BALANCE_TOLERANCE = 1.0  # credits: rounding between our figures and the API's
BALANCE_EVERY = 20  # creates between two balance checks during a run


@dataclass
class Budget:
    """The credits a run may still reserve, and what it has learned of the API's prices."""

    cap: float | None  # budget.max_credits; None: no cap (the balance still bounds the run)
    committed: float = 0.0  # spent or held by the campaign at this target, earlier runs included
    ratios: dict[str, float] = field(default_factory=dict)  # kind → stated / estimated (the highest)
    confirmed: set[str] = field(default_factory=set)  # kinds whose real price is known
    assumed: float | None = None  # what a job of unknown price reserves (--assume-price)
    downstream: float = 0.0  # of `committed`, what a chain's downstream jobs spent (see `stages`)

    @classmethod
    def from_store(
        cls, jobs: Iterable[StoredJob], committed: float, *, cap: float | None, assumed: float | None
    ) -> Budget:
        """Pick up what earlier runs learned: every stated price the store holds."""
        budget = cls(cap=cap, committed=committed, assumed=assumed)
        for job in jobs:
            if job.required is not None:
                budget.learn(job.kind, job.estimate, job.required)
        return budget

    def cost(self, kind: str, estimate: float | None) -> float | None:
        """What a job reserves: its estimate at the kind's learned ratio, or the assumed bound."""
        if estimate is None:
            return self.assumed
        return estimate * self.ratios.get(kind, 1.0)

    def admits(self, cost: float) -> bool:
        return self.cap is None or self.committed + cost <= self.cap + 1e-9

    def reserve(self, cost: float) -> None:
        """Taken before any await, so no two jobs can reserve the same credits."""
        self.committed += cost

    def release(self, cost: float) -> None:
        """The create was refused: nothing was charged."""
        self.committed -= cost

    def settle(self, kind: str, estimate: float | None, reserved: float, charged: float) -> None:
        """The API said a job costs `charged`, where we had reserved `reserved`."""
        self.committed += charged - reserved
        self.learn(kind, estimate, charged)

    def learn(self, kind: str, estimate: float | None, charged: float) -> None:
        self.confirmed.add(kind)
        if estimate:
            self.ratios[kind] = max(self.ratios.get(kind, 1.0), charged / estimate)  # never below 1

    def differences(self) -> dict[str, float]:
        """Kinds whose learned ratio is not 1: where our estimate and the API's figure differ."""
        return {kind: ratio for kind, ratio in self.ratios.items() if abs(ratio - 1.0) > 1e-9}

    def price_note(self) -> str | None:
        """`prices: image: the API charged 10× our estimate, …`, for plan and a run; None when none differ."""
        parts = [
            f"{kind}: the API charged {ratio:.3g}× our estimate, so its jobs are priced at that rate"
            for kind, ratio in sorted(self.differences().items())
        ]
        return "prices: " + "; ".join(parts) if parts else None


def campaign_line(budget: Budget, to_submit: float) -> str:
    """The whole campaign at its target against its cap: what `run` refuses over."""
    total = budget.committed + to_submit
    figures = f"{credits(budget.committed)} spent or held + {credits(to_submit)} to submit = {credits(total)}"
    if budget.cap is None:
        return f"campaign credits: {figures} (no budget.max_credits)"
    verdict = "within budget" if budget.admits(to_submit) else "OVER BUDGET"
    return f"campaign credits: {figures}: {verdict} ({credits(budget.cap)} max)"


@dataclass
class BalanceWatch:
    """The balance re-read during a run: a fall the run's reservations cannot explain stops new creates.

    `start` is the balance before the first create; every credit this run reserved for a create
    that was sent is `sent`, and `flying` for those still awaiting their answer (concurrent creates,
    or the next one while the balance is read). A fall beyond them (and a small tolerance) means the
    API charges more than it says, or something else spends in the workspace: either way, stop buying."""

    start: float | None
    sent: float = 0.0
    creates: int = 0
    flying: float = 0.0  # creates on the wire: the API may have charged them before it answers
    # A shared store's: what every runner of the account has reserved since this one read `start`
    # (`shared.Runner.reserved_since_start`), all of which the balance may show as spent.
    everyone: Callable[[], float] | None = None

    def due(self) -> bool:
        return self.start is not None and self.creates > 0 and self.creates % BALANCE_EVERY == 0

    def excess(self, balance: float | None) -> float:
        """Credits gone beyond what this run reserved; 0 when the balance explains itself (within
        BALANCE_TOLERANCE) or cannot be read."""
        if self.start is None or balance is None:
            return 0.0
        ours = self.sent + self.flying
        if self.everyone is not None:  # a shared store: every runner of the account spends this balance
            ours = max(ours, self.everyone())
        excess = (self.start - balance) - ours
        return excess if excess > BALANCE_TOLERANCE else 0.0
