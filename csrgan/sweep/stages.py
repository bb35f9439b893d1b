"""Stage artefacts shared across trials and sweeps: the CycleGAN and SRResNet pre-training.

A sweep is a small DAG: CycleGAN (once per distinct CycleGAN config) -> SRResNet pre-training (once per
distinct pre-training config) -> the SRGAN (GAN-phase) trials. Which stages a trial needs, and the key
of each, come from the stage table (:mod:`csrgan.train.stages`); each lives in
``<storage>/_stages/<stage>-<key>/`` (:class:`csrgan.storage.SweepLayout`), laid out like any stage run
(:mod:`csrgan.train.launch`) plus::

    stage.json        key, stage, status, final metrics, config excerpt, timings, csrgan version,
                      and for the degradation stage its quality-gate verdict (``quality``)
    .lock             a file lock: one builder per key, others wait and then reuse (folder storage)
    .lease            the same on object storage: a lease object written with conditional writes
                      (:mod:`csrgan.storage.lease`), renewed while the build runs, taken over when stale

On object storage (``layout.remote``) the store is the truth and each process works in its node's mirror
(:mod:`csrgan.storage.remote`): a finished stage is pulled (without its checkpoints) before use; a builder
pulls whatever an earlier builder left (its checkpoints: the build resumes), pushes its checkpoints at every
lease heartbeat, and publishes ``final/`` before the ``stage.json`` that says ``finished``.

A build runs where the caller runs it (a trial process, a Ray task), through the launcher. Each
reuse, wait, build (with its progress at every report) and result is announced as one line,
:func:`csrgan.sweep.logs.stage_message` (``[csrgan] stage pretrain-<key>: building [trial <id>]``): in
a Ray process it reaches the driver, whose live view shows it; the stage id is always ``<stage>-<key>``,
the stage's folder name.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from csrgan import __version__
from csrgan.config import ExperimentConfig
from csrgan.storage import STAGES_DIR, Remote, SweepLayout
from csrgan.sweep.logs import stage_message
from csrgan.train.context import CHECKPOINTS_DIR
from csrgan.train.degradation import PoorStageError, judge_stage, require_usable
from csrgan.train.launch import inside_ray_task, launch
from csrgan.train.loop import FINAL_DIR
from csrgan.train.stages import get_stage

__all__ = [
    "STAGES_DIR",
    "StageDivergedError",
    "StageOutcome",
    "StageRef",
    "build_shared_stages",
    "check_degradation",
    "ensure_stage",
    "shared_stages",
    "stage_ref",
]


class StageDivergedError(RuntimeError):
    """A shared stage produced non-finite losses: every trial that depends on it is ``diverged``."""


#: Seconds a stage-build lease lives without a renewal before a waiter may take the build over; the
#: holder renews every third of it. Long enough for a loaded machine's pauses, short enough that a
#: killed builder's stage is picked up within a minute.
LEASE_TTL_S = 60.0


@dataclass(frozen=True)
class StageRef:
    stage: str
    key: str
    dir: Path
    remote: Remote | None = None  # object storage: the store, with ``rel`` the stage folder's key prefix
    rel: str = ""

    @property
    def id(self) -> str:
        """``<stage>-<key>``: the folder name under ``_stages/``, and how messages name the stage."""
        return f"{self.stage}-{self.key}"

    @property
    def final(self) -> Path:
        return self.dir / "final"

    @property
    def info_path(self) -> Path:
        return self.dir / "stage.json"

    def info(self) -> dict[str, Any] | None:
        """``stage.json``: on object storage the store's copy (the truth), else the file."""
        try:
            if self.remote is not None:
                data = self.remote.read_bytes(f"{self.rel}/stage.json")
                return None if data is None else json.loads(data)
            return json.loads(self.info_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def fetch(self) -> None:
        """Object storage: bring the finished stage (all but its checkpoints) into this process's mirror."""
        if self.remote is not None:
            self.remote.pull(self.rel, self.dir, skip=(CHECKPOINTS, *LEASE_FILES))

    def publish(self, skip: tuple[str, ...] = (), seen: dict[str, tuple[int, int]] | None = None) -> None:
        """Object storage: upload the stage folder but ``stage.json``, which only :func:`_write_info`
        writes (after this), so the store's marker never names files that are not there yet."""
        if self.remote is not None:
            skip = (*skip, *LEASE_FILES, "stage.json")
            self.remote.push(self.dir, self.rel, skip=skip, seen=seen, mirror_deletes=CHECKPOINTS)

    def is_done(self) -> bool:
        info = self.info()
        finished = bool(info) and info.get("status") == "finished"
        return finished and (self.remote is not None or self.final.is_dir())


@dataclass(frozen=True)
class StageOutcome:
    ref: StageRef
    reused: bool
    info: dict[str, Any]


CHECKPOINTS = CHECKPOINTS_DIR
#: The stage folder's lock and lease files: never copied between the store and a mirror.
LEASE_FILES = (".lock", ".lease", ".lease.guard")


def stage_ref(stage: str, cfg: ExperimentConfig, layout: SweepLayout) -> StageRef:
    key = get_stage(stage).key(cfg)
    folder = layout.stage_dir(stage, key)
    return StageRef(stage, key, folder, layout.remote, layout.rel(folder))


def shared_stages(cfg: ExperimentConfig) -> tuple[str, ...]:
    """The stages a trial's GAN phase needs, upstream first (``p = 0``: no CycleGAN; no pre-training
    iterations: no pre-training)."""
    return get_stage("gan").inputs(cfg)


Notify = Callable[[str], None]


def _print_line(line: str) -> None:
    """Stage messages go to stderr (stdout stays the caller's); in a Ray process Ray forwards both to the
    driver, whose log router (:mod:`csrgan.sweep.logs`) shows them."""
    print(line, file=sys.stderr, flush=True)


def ensure_stage(
    ref: StageRef,
    build: Callable[[Path], dict[str, Any]],
    describe: dict[str, Any] | None = None,
    poll_s: float = 2.0,
    notify: Notify | None = _print_line,
    trial: str | None = None,
) -> StageOutcome:
    """Return the finished stage at ``ref``, building it with ``build(stage_dir)`` if nobody has.

    ``build`` trains into ``stage_dir`` (checkpoints under ``stage_dir/checkpoints`` make an interrupted
    build resume) and returns the final metrics. Concurrent callers for the same key wait on the lock and
    then reuse the result; a failed build leaves no ``finished`` marker, so the next caller retries. A
    diverged build is remembered (it is deterministic: rebuilding would diverge again). Each reuse, wait,
    build and outcome is one :func:`csrgan.sweep.logs.stage_message` line to ``notify`` (None: silent),
    naming ``trial`` when given.
    """

    def say(text: str) -> None:
        if notify is not None:
            notify(stage_message(ref.id, text, trial))

    _raise_if_diverged(ref)
    if ref.is_done():
        ref.fetch()
        say(f"reused ({ref.dir})")
        return StageOutcome(ref, True, ref.info() or {})
    ref.dir.mkdir(parents=True, exist_ok=True)
    hold = _hold_remote if ref.remote is not None else _hold_local
    with hold(ref, poll_s, say) as held:
        try:
            _raise_if_diverged(ref)
            if ref.is_done():  # someone else built it while we waited
                ref.fetch()
                say(f"reused, built by another process while this one waited ({ref.dir})")
                return StageOutcome(ref, True, ref.info() or {})
            say("building")
            outcome = _build_locked(ref, build, describe, held)
            say(f"built in {outcome.info['wall_s']:.0f} s")
            return outcome
        except StageDivergedError:
            say("DIVERGED (non-finite loss): every trial that needs it is marked diverged")
            raise


class StageLeaseLost(RuntimeError):
    """Another builder took this stage over (this one stalled past the lease's expiry): nothing published."""


@contextlib.contextmanager
def _hold_local(ref: StageRef, poll_s: float, say: Callable[[str], None]) -> Iterator[Callable[[], None]]:
    """Folder storage: the stage's file lock (released by the kernel if the holder dies)."""
    lock = FileLock(str(ref.dir / ".lock"), poll_interval=poll_s)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say("waiting: another process is building it")
        lock.acquire()
    try:
        yield lambda: None
    finally:
        lock.release()


@contextlib.contextmanager
def _hold_remote(ref: StageRef, poll_s: float, say: Callable[[str], None]) -> Iterator[Callable[[], None]]:
    """Object storage: the stage's lease (:mod:`csrgan.storage.lease`). While it is held, the heartbeat
    renews it and uploads the build's checkpoints; the yielded check raises :class:`StageLeaseLost` when
    another builder has taken over, so a stalled builder never publishes over the new one."""
    from csrgan.storage.lease import LeaseLostError, acquire, lease_store

    assert ref.remote is not None
    told: list[bool] = []

    def waiting(info: Any) -> None:
        if not told:
            told.append(True)
            who = getattr(info, "owner", "another process")
            say(f"waiting: {who} is building it (lease {ref.rel}/.lease)")

    lease = acquire(lease_store(ref.remote.uri), f"{ref.rel}/.lease", LEASE_TTL_S, poll_s, waiting)
    seen: dict[str, tuple[int, int]] = {}
    try:
        # an earlier builder's checkpoints: this build resumes from them (never the lease: only the lease
        # module writes it, conditionally)
        ref.remote.pull(ref.rel, ref.dir, skip=LEASE_FILES)

        def beat() -> None:  # a failed upload is retried at the next beat; the lease itself is renewed
            try:
                ref.publish(skip=(FINAL_DIR,), seen=seen)
            except Exception as exc:  # noqa: BLE001 - reported, never fatal to the build
                say(f"could not upload checkpoints ({type(exc).__name__}: {exc}); retrying at the next beat")

        lease.start_heartbeat(on_beat=lambda _lease: beat())

        def still_held() -> None:  # renews once more: proof that nobody took over, right before publishing
            try:
                lease.confirm()
            except LeaseLostError:
                raise StageLeaseLost(
                    f"stage {ref.id}: another builder took over the lease; not publishing"
                ) from None

        yield still_held
    finally:
        lease.release()


def _build_locked(
    ref: StageRef,
    build: Callable[[Path], dict[str, Any]],
    describe: dict[str, Any] | None,
    still_held: Callable[[], None] = lambda: None,
) -> StageOutcome:
    """Build the stage (the caller holds its lock or lease) and write its ``stage.json``; on object
    storage, publish the folder before the ``finished`` marker."""
    t0 = time.time()
    _write_info(ref, {"status": "running", "started_at": _now(), "pid": os.getpid(), **(describe or {})})
    metrics = build(ref.dir)
    done = {
        "stage": ref.stage,
        "key": ref.key,
        "metrics": metrics,
        "finished_at": _now(),
        **(describe or {}),
    }
    still_held()
    if metrics.get("diverged"):  # trainers stop without a final artefact when a loss goes non-finite
        _write_info(ref, {**done, "status": "diverged"})
        raise StageDivergedError(f"stage {ref.id} diverged; see {ref.info_path}")
    if not ref.final.is_dir():
        raise RuntimeError(f"stage {ref.id}: the build finished without writing {ref.final}")
    info = {
        **done,
        "status": "finished",
        "wall_s": round(time.time() - t0, 3),
        "csrgan_version": __version__,
    }
    ref.publish()  # everything but the marker first
    still_held()
    _write_info(ref, info)
    return StageOutcome(ref, False, info)


@dataclass(frozen=True)
class StageLines:
    """Reporter factory (:class:`csrgan.train.context.Reporter`) for a stage build: one
    :func:`csrgan.sweep.logs.stage_message` progress line per report (``step S/N, X s/step``), printed
    on rank 0 wherever the build runs. Picklable: Ray ships it to Train workers."""

    stage_id: str
    iters: int
    trial: str | None = None

    def __call__(self) -> _StageLineReporter:
        return _StageLineReporter(self)


class _StageLineReporter:
    def __init__(self, spec: StageLines) -> None:
        self.spec = spec

    def resumed(self, step: int) -> None:
        _print_line(stage_message(self.spec.stage_id, f"resumed at step {step}", self.spec.trial))

    def report(self, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        step, sps = metrics.get("step"), metrics.get("time/step_s")
        if isinstance(step, int) and not metrics.get("diverged"):
            iters = metrics.get("iters") or self.spec.iters
            rate = f", {sps:.3f} s/step" if isinstance(sps, float) else ""
            _print_line(stage_message(self.spec.stage_id, f"step {step}/{iters}{rate}", self.spec.trial))
        return metrics


def _current_trial() -> str | None:
    """The Tune trial this process runs, if any (asked quietly: outside a trial Ray warns)."""
    if "ray.tune" not in sys.modules:
        return None
    import warnings

    try:
        import ray.tune

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ray.tune.get_context().get_trial_id()
    except Exception:  # noqa: BLE001 - only for a message
        return None


def build_shared_stages(
    cfg: ExperimentConfig,
    layout: SweepLayout,
    built_by: str = "trial",
    only: tuple[str, ...] | None = None,
    notify: Notify | None = _print_line,
) -> dict[str, StageOutcome]:
    """Fetch or build (in this Ray process, :func:`csrgan.train.launch.inside_ray_task`) the shared stages
    of ``cfg`` — or just ``only`` of them — each reading its upstream stages' ``final/``. Every reuse and
    build is announced to ``notify`` (:func:`ensure_stage`), with its progress (:class:`StageLines`) and,
    inside a Tune trial (``built_by="trial"``), the trial's id."""
    out: dict[str, StageOutcome] = {}
    trial = _current_trial() if built_by == "trial" else None
    for name in shared_stages(cfg):
        if only is not None and name not in only:
            continue
        ref = stage_ref(name, cfg, layout)
        inputs = {up: stage_ref(up, cfg, layout).final for up in get_stage(name).inputs(cfg)}
        section = cfg.cyclegan if name == "cyclegan" else cfg.sr.pretrain
        lines = StageLines(ref.id, section.iters, trial)

        def build(
            d: Path, name: str = name, inputs: dict[str, Path] = inputs, lines: StageLines = lines
        ) -> dict[str, Any]:
            return launch(name, cfg, d, inputs, inside_ray_task(cfg), reporter=lines).metrics

        describe = {name: section.model_dump(mode="json"), "built_by": built_by}
        if name != "cyclegan":
            describe |= {"mix_prob": cfg.sr.mix_prob, "lr_source": cfg.sr.lr_source, "seed": cfg.seed}
        out[name] = ensure_stage(ref, build, describe=describe, notify=notify, trial=trial)
        if name == "cyclegan":
            try:
                out[name] = check_degradation(out[name], cfg)
            except PoorStageError:
                if built_by == "trial":  # the driver says so itself for the stages its tasks build
                    _print_line(stage_message(ref.id, "REFUSED by the quality gate (see stage.json)", trial))
                raise
    return out


def check_degradation(outcome: StageOutcome, cfg: ExperimentConfig) -> StageOutcome:
    """Apply the quality gate to a finished degradation stage: record the verdict in its ``stage.json``
    and in the outcome (``info["quality"]``), then refuse a poor stage unless ``cyclegan.accept_poor``
    (:class:`csrgan.train.degradation.PoorStageError`; the stage stays, nothing is lost)."""
    ref = outcome.ref
    quality = judge_stage(ref.final, cfg)
    info = {**outcome.info, "quality": quality}
    if outcome.info.get("quality", {}).get("verdict") != quality["verdict"]:
        _write_info(ref, {**(ref.info() or {}), "quality": quality})
    require_usable(quality, ref.final)
    return StageOutcome(ref, outcome.reused, info)


def _raise_if_diverged(ref: StageRef) -> None:
    info = ref.info()
    if info and info.get("status") == "diverged":
        raise StageDivergedError(f"{ref.stage} stage {ref.key} diverged; see {ref.info_path}")


def _write_info(ref: StageRef, info: dict[str, Any]) -> None:
    """Write ``stage.json`` (on object storage: also to the store, where readers look)."""
    data = json.dumps(info, indent=2, sort_keys=True, default=str)
    ref.dir.mkdir(parents=True, exist_ok=True)
    tmp = ref.info_path.with_name(".stage.json.tmp")
    tmp.write_text(data)
    tmp.replace(ref.info_path)
    if ref.remote is not None:
        ref.remote.write_bytes(f"{ref.rel}/stage.json", data.encode())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
