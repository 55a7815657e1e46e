"""Chained stages: a job that `needs:` a stage reads that stage's outputs as `upstream` (issue 15).

    jobs:
      - {id: "ref-{{ n }}", stage: research, type: reference_analysis, url: ..., matrix: {n: [1, 2]}}
      - id: "hero-{{ upstream.id }}"
        stage: hero
        needs: research              # one image job per analysis (aligned, the default)
        type: image
        prompt: "{{ upstream.result.analysis.hook.text }}"
      - id: "ad-{{ avatar }}"
        needs: hero
        fan: join                    # one ad per avatar over every hero image
        type: ad_video
        reference_image_urls: "{{ upstream | map(attribute='url') | list }}"
        matrix: {avatar: [avatar_maya01, avatar_leo02]}

**Outputs.** A job yields one output per image (`image_count`), one per avatar (Face Swap), else
one. An output is `{id, key, matrix, position, url, media_type, result}`: the upstream job's id,
key and matrix row, its 1-based place among the job's outputs, the media URL the API returned for
it (None for a Reference Analysis), the media type, and the job's whole `result` (a Reference
Analysis's `analysis` with its hooks, scenes and script beats: whatever the API returns).

**Fan-out.** `aligned` (the default): one downstream job per upstream output, per row of the
downstream job's own matrix (crossed). `join`: one job per row of its own matrix, `upstream` being
the list of every output. The campaign matrix does not apply to a downstream job: its upstream
carries those values (`upstream.matrix`).

**Plan.** Before anything runs a downstream job is rendered with a stand-in `upstream` (its fields
read as `upstream-<name>`, URLs as `https://upstream.invalid/output`), so its templates are
checked and it is priced; its count is the bound its upstream allows (every upstream job making
every output), and the budget is checked against that worst case before the first create.

**Run.** Stages run in order: a downstream stage is expanded when every job of its upstream stage
has gone as far as this run can take it, with each output's result fetched afresh (a signed URL
from an earlier run may have expired). Outputs are kept in their stored form (URL queries
redacted, see `workspace`), so a downstream job's key does not change when the API signs its media
again; the run sends the URL it just read. An aligned job whose upstream job did not succeed is
recorded `blocked`, never sent and never charged; a join runs over the outputs that exist once its
upstream stage has finished (none: blocked). A finished upstream is never sent again because a
downstream failed, and a changed downstream template changes only downstream keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sume_batch.errors import Problem

if TYPE_CHECKING:
    from sume_batch.manifest import JobTemplate

FANS = ("aligned", "join")
RESERVED_AXIS = "upstream"  # a downstream job's stored matrix names its upstream under this axis
PROBE_URL = "https://upstream.invalid/output"
_URL_READ = re.compile(r"upstream\s*\.\s*url\b|attribute\s*=\s*['\"]url['\"]")
_UPSTREAM = re.compile(r"\bupstream\b")


class Probe(str):
    """The stand-in `upstream` a downstream job is rendered with before its upstream has run: any
    field reads as another probe (`upstream-<name>`, a URL for `url`), so a template is checked and
    priced without the values it will get. It goes along with whatever a template does with a real
    output: arithmetic and comparisons, calls (`.items()`), loops (two items, each a probe), indexes."""

    def __new__(cls, text: str = "upstream") -> Probe:
        return super().__new__(cls, text)

    def __getattr__(self, name: str) -> Probe:
        if name.startswith("_"):
            raise AttributeError(name)
        return Probe(PROBE_URL if name == "url" else f"upstream-{name}")

    def __getitem__(self, name: Any) -> Probe:
        return self.__getattr__(str(name)) if isinstance(name, str) else Probe()

    def __call__(self, *args: Any, **kwargs: Any) -> Probe:
        return Probe()

    def __iter__(self) -> Iterator[Probe]:
        return iter((Probe(), Probe()))

    def _same(self, *_: Any) -> Probe:
        return Probe()

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __pow__ = __neg__ = _same

    def _false(self, other: Any) -> bool:
        return False

    __lt__ = __le__ = __gt__ = __ge__ = _false

    def __hash__(self) -> int:
        return str.__hash__(self)


class ProbeList(list[Any]):
    """The stand-in `upstream` of a join: a few probes, and a probe at any index past them."""

    def __getitem__(self, index: Any) -> Any:
        try:
            return super().__getitem__(index)
        except (IndexError, TypeError):
            return Probe()


def probe(fan: str) -> Any:
    return ProbeList([Probe(), Probe()]) if fan == "join" else Probe()


def outputs_of(kind: str, request: Mapping[str, Any]) -> int:
    """How many outputs a job of this kind and request yields."""
    if kind == "image":
        count = request.get("image_count", 1)
        return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1
    if kind == "face_swap":
        avatars = request.get("avatar_ids")
        return len(avatars) if isinstance(avatars, list) and avatars else 1
    return 1


def graph_problems(templates: Sequence[JobTemplate], file: str) -> list[Problem]:
    """The chain's problems, located: an unknown stage, a cycle, an aligned id that cannot tell its
    jobs apart, a URL read from a stage that yields none, a matrix axis named `upstream`."""
    stages: dict[str, list[JobTemplate]] = {}
    for template in templates:
        if template.stage:
            stages.setdefault(template.stage, []).append(template)
    problems = []
    for template in templates:
        if template.needs is None:
            if template.fan != "aligned":
                problems.append(
                    _at(file, template, "fan", "fan: needs a `needs:` (the stage it fans out from)")
                )
            continue
        upstream = stages.get(template.needs)
        if not upstream:
            known = ", ".join(sorted(stages)) or "none: name one with stage:"
            problems.append(
                _at(file, template, "needs", f"no job is the stage {template.needs!r} (stages: {known})")
            )
            continue
        if _cycle(template, stages):
            problems.append(
                _at(file, template, "needs", f"the stage {template.needs!r} needs this job again: a cycle")
            )
        text = _text(template)
        if template.fan == "aligned" and not _UPSTREAM.search(str(template.id)):
            message = (
                "an aligned job's id must tell its jobs apart by upstream: use {{ upstream.id }}"
                " (and {{ upstream.position }} for several outputs each)"
            )
            problems.append(_at(file, template, "id", message))
        if _URL_READ.search(text) and all(one.kind.name == "reference_analysis" for one in upstream):
            message = f"the stage {template.needs!r} yields no media URL (an analysis): read upstream.result"
            problems.append(_at(file, template, "needs", message))
        if any(name == RESERVED_AXIS for name, _ in template.matrix.axes):
            problems.append(
                _at(
                    file,
                    template,
                    "matrix",
                    "`upstream` names the upstream of a downstream job: rename the axis",
                )
            )
    return problems


def _cycle(template: JobTemplate, stages: Mapping[str, list[JobTemplate]]) -> bool:
    """Whether following `needs` from this template comes back to it."""
    seen, todo = set(), [template.needs]
    while todo:
        stage = todo.pop()
        if stage is None or stage in seen:
            continue
        seen.add(stage)
        for one in stages.get(stage, ()):
            if one is template:
                return True
            todo.append(one.needs)
    return False


def _text(template: JobTemplate) -> str:
    return " ".join(str(value) for value in (template.id, *template.fields.values()))


def _at(file: str, template: JobTemplate, field: str, message: str) -> Problem:
    line, column = template.marks.get(field) or template.marks[""]
    return Problem(file, line, column, f"{template.path}.{field}", message)


def order(templates: Sequence[JobTemplate]) -> list[JobTemplate]:
    """The downstream templates, each after every template of the stage it needs."""
    done: set[int] = {t.index for t in templates if t.needs is None}
    ordered: list[JobTemplate] = []
    waiting = [t for t in templates if t.needs is not None]
    while waiting:
        ready = [t for t in waiting if all(u.index in done for u in templates if u.stage == t.needs)]
        if not ready:  # a cycle, which validation refuses
            break
        for one in ready:
            ordered.append(one)
            done.add(one.index)
            waiting.remove(one)
    return ordered


def upstream_values(outputs: Sequence[Mapping[str, Any]], fan: str) -> Iterator[Any]:
    """What `upstream` is for each downstream job: each output (aligned), or all of them (join)."""
    if fan == "join":
        if outputs:
            yield list(outputs)
        return
    yield from outputs


def output_rows(
    job: Any, result: Mapping[str, Any], media: Iterable[tuple[str, str]]
) -> list[dict[str, Any]]:
    """A finished upstream job's outputs: one per media URL (url, media type), or one without."""
    base = {"id": job.id, "key": job.key, "matrix": dict(job.matrix), "result": dict(result)}
    found = [
        {**base, "position": n, "url": url, "media_type": kind} for n, (url, kind) in enumerate(media, 1)
    ]
    return found or [{**base, "position": 1, "url": None, "media_type": None}]
