"""Run a sweep in three steps: plan (validate, lay out storage), tune (Ray, stages, Tuner), finish.

1. :func:`plan_sweep` — everything that can fail before Ray starts: the storage layout
   (:class:`csrgan.storage.SweepLayout`: where results, stages, Tune state and Optuna live), resume
   state, LPIPS weights, the trial list.
2. :func:`run_sweep` — joins or starts Ray, checks storage and resources, writes ``_sweep.json``,
   starts each distinct CycleGAN as a Ray task (p = 0 trials run meanwhile) and runs the Tuner, whose
   trainable is :func:`csrgan.sweep.trial.run_trial`.
3. :func:`finish_sweep` — maps Tune's trial states onto row statuses, lists what is unfinished, and
   measures how much of the wall time went to training.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from csrgan.config import ExperimentConfig, SearchConfig, with_params
from csrgan.preflight import preflight
from csrgan.storage import StorageError, SweepLayout
from csrgan.sweep.recorder import git_commit
from csrgan.sweep.space import TrialSpec, expand_trials, optuna_space, trial_config
from csrgan.sweep.stages import build_shared_stages, shared_stages, stage_ref
from csrgan.sweep.trial import SweepRuntime, devices_of, run_trial

if TYPE_CHECKING:
    from csrgan.cluster.capacity import Fit
    from csrgan.sweep.progress import SweepView

Echo = Callable[[str], None]


class SweepError(RuntimeError):
    """A problem found before anything ran (storage, resources, resume state). Message is user-facing."""


@dataclass
class SweepOutcome:
    results_dir: Path  # this machine's folder (the driver's mirror on object storage)
    wall_s: float
    statuses: dict[str, str] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    stage_reuse: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # trial id -> "label: first line of its error"
    stage_errors: dict[str, str] = field(default_factory=dict)  # stage -> why it failed or was refused
    results_uri: str = ""  # the results as the user names them (a URI on object storage)

    @property
    def complete(self) -> bool:
        return not self.unfinished


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep, before Ray: its config (LPIPS possibly switched off), layout and trials."""

    cfg: ExperimentConfig
    layout: SweepLayout
    trials: list[TrialSpec]
    resume: bool

    @property
    def metric(self) -> tuple[str, str]:
        """(metric name, ``max`` | ``min``) for Tune: the first objective, the one "best" means."""
        return self.objectives[0]

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """Every objective as (metric name, ``max`` | ``min``); one unless ``search.metric`` is a list."""
        s = self.cfg.search
        if s is None:
            first = self.cfg.data.test_sets[0].name if self.cfg.data.test_sets else "unknown"
            return [(f"{first}/psnr", "max")]
        return [(m.name, "max" if m.goal == "maximize" else "min") for m in s.targets]

    @property
    def n_trials(self) -> int:
        s = self.cfg.search
        return len(self.trials) or (s.num_samples if s is not None else 1)


# ---------------------------------------------------------------------------------------------- plan
def plan_trials(cfg: ExperimentConfig) -> list[TrialSpec]:
    """Grid/random trials in run order: those that need no CycleGAN first, so they run while it trains."""
    if cfg.search is None:
        return [TrialSpec(params={}, seed=cfg.seed)]
    if cfg.search.method == "optuna":
        return []
    trials = expand_trials(cfg.search)
    return sorted(trials, key=lambda t: "cyclegan" in shared_stages(trial_config(cfg, t)))  # stable


def sweep_configs(cfg: ExperimentConfig, trials: list[TrialSpec]) -> list[ExperimentConfig]:
    """The base config and every configuration its trials can take, for the preflight: each planned
    trial (grid, arms, random samples), or for Optuna each listed value and each end of each range."""
    if cfg.search is None or cfg.search.method != "optuna":
        return [cfg, *(trial_config(cfg, t) for t in trials)]
    out = [cfg]
    for name, spec in cfg.search.parameters.items():
        for value in spec.values or spec.uniform or spec.log_uniform or spec.int_uniform or ():
            out.append(with_params(cfg, {name: value}))
    return out


def plan_sweep(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    storage: str | None = None,
    echo: Echo = print,
    check_data: bool = False,
) -> SweepPlan:
    """Check every input (:mod:`csrgan.preflight`), lay out storage, check resume state and weights.

    Nothing is started or written. Raises :class:`csrgan.preflight.PreflightError` (all input problems
    at once) or :class:`SweepError`. ``check_data`` decodes every image, not only small folders'.
    """
    if storage:
        cfg = cfg.model_copy(update={"storage": storage})
    trials = plan_trials(cfg)
    preflight(sweep_configs(cfg, trials), check_data=check_data)
    try:
        layout = SweepLayout.of(cfg.storage, cfg.name)
    except StorageError as exc:
        raise SweepError(str(exc)) from None
    _check_object_storage(cfg, layout, trials)
    has_state = _has_tune_state(layout)
    if resume and not has_state:
        raise SweepError(f"--resume: no sweep state at {_tune_uri(layout)}; start it without --resume")
    if not resume and has_state:
        raise SweepError(
            f"sweep {cfg.name!r} already has state at {layout.results_uri}. Continue it with --resume, "
            f"or start a new one with another name (--set name=...) or storage (--storage DIR)"
        )
    _check_reused_degradations(cfg, layout, trials)
    return SweepPlan(_lpips_preflight(cfg, echo), layout, trials, resume)


def _has_tune_state(layout: SweepLayout) -> bool:
    """Whether the sweep has Tune state (in the store on object storage, where the mirror may be empty)."""
    if layout.remote is not None:
        return layout.remote.exists(layout.rel(layout.tune))
    return layout.tune.exists()


def _tune_uri(layout: SweepLayout) -> str:
    return layout.remote.child(layout.rel(layout.tune)) if layout.remote is not None else str(layout.tune)


def _check_object_storage(cfg: ExperimentConfig, layout: SweepLayout, trials: list[TrialSpec]) -> None:
    """Object storage takes one-worker trials and stages: a worker group's ranks write ``final/`` and
    grids on their own nodes, which the mirror-and-sync scheme (:mod:`csrgan.storage.remote`) does not
    collect. Refused up front, naming the field."""
    if layout.remote is None:
        return
    wide = sorted({c.resources.workers for c in sweep_configs(cfg, trials) if c.resources.workers > 1})
    if wide:
        raise SweepError(
            f"resources.workers={wide[0]} with object storage ({layout.remote.uri}): multi-worker trials "
            "need storage every worker sees as a folder (a shared filesystem); use resources.workers: 1 "
            "per trial on object storage, or a shared folder (cluster/README.md, Storage)"
        )


def _check_reused_degradations(cfg: ExperimentConfig, layout: SweepLayout, trials: list[TrialSpec]) -> None:
    """A finished degradation stage that fails the quality gate stops the sweep before anything starts
    (unless ``cyclegan.accept_poor``); one still to be built is judged when it finishes."""
    from csrgan.train.degradation import PoorStageError, judge_stage, require_usable

    for t in trials:
        tc = trial_config(cfg, t)
        if "cyclegan" not in shared_stages(tc):
            continue
        ref = stage_ref("cyclegan", tc, layout)
        if ref.is_done():
            ref.fetch()
            try:
                require_usable(judge_stage(ref.final, tc), ref.final)
            except PoorStageError as exc:
                raise SweepError(str(exc)) from None


def _lpips_preflight(cfg: ExperimentConfig, echo: Echo) -> ExperimentConfig:
    """Optional LPIPS with missing weights: say so once, loudly, and drop the metric (the preflight has
    already refused missing weights that are not optional)."""
    lp = cfg.eval.lpips
    if "lpips" not in cfg.eval.metrics or lp.random_backbone or not lp.optional:
        return cfg
    from csrgan.weights import MissingWeightsError, first_time, lpips_disabled_message, resolve

    backbone = "alexnet" if lp.net == "alex" else "vgg16"
    try:
        resolve(backbone, lp.source)
    except MissingWeightsError as exc:
        message = lpips_disabled_message(exc, "sweep")  # names the experiment file's keys
        if first_time(message):  # once per process, also when a sweep is planned twice (submit, tests)
            bar = "!" * 78
            echo(f"{bar}\n{message}\n{bar}")
        metrics = [m for m in cfg.eval.metrics if m != "lpips"]
        return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"metrics": metrics})})
    return cfg


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """A 1-worker trial runs its trainer in-process; an N-worker trial is a 1-CPU driver + N Train workers."""
    r = cfg.resources
    if r.workers == 1:
        return {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}
    return {"CPU": 1.0}


def embedded_resources(num_cpus: int | None) -> dict[str, float]:
    """What the embedded cluster will have: ``num_cpus`` (default: the CPUs this process may use, as
    Ray counts them) and every visible GPU."""
    import torch

    cpus = num_cpus if num_cpus is not None else len(os.sched_getaffinity(0))
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def check_fits(cfg: ExperimentConfig, cluster: dict[str, float]) -> int:
    """How many trials fit at once; raise :class:`SweepError` if not even one does (Ray would otherwise
    wait forever). The rule is :func:`csrgan.cluster.capacity.check_fits`."""
    from csrgan.cluster.capacity import CapacityError
    from csrgan.cluster.capacity import check_fits as fits

    try:
        return fits(cfg, cluster)
    except CapacityError as exc:
        raise SweepError(str(exc)) from None


# ---------------------------------------------------------------------------------------------- tune
def run_sweep(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    address: str | None = None,
    storage: str | None = None,
    num_cpus: int | None = None,
    echo: Echo = print,
    check_data: bool = False,
    view: SweepView | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep of ``cfg`` (data paths absolute: ``csrgan.data.layout.resolve_data``).

    Everything is checked first (:func:`plan_sweep`); only then is the demo set built (``data.demo``),
    the results folder made and Ray started. A fresh sweep that fails before its first trial starts
    leaves no Tune state behind, so the corrected file runs without ``--resume``.

    Progress goes to ``view`` (default: :class:`csrgan.sweep.progress.PlainView` lines through ``echo``);
    Ray's and Tune's own output goes to ``<results>/_logs/sweep-<time>.log`` (:mod:`csrgan.sweep.logs`).
    """
    from csrgan.sweep.progress import PlainView

    t0 = time.time()
    view = view if view is not None else PlainView(echo)
    plan = plan_sweep(cfg, resume=resume, storage=storage, echo=view.event, check_data=check_data)
    if address is None:  # the embedded cluster's size is known before it starts: check now
        check_fits(plan.cfg, embedded_resources(num_cpus))
    _build_demo(plan.cfg)
    fresh = not _has_tune_state(plan.layout)
    plan.layout.results.mkdir(parents=True, exist_ok=True)
    try:
        return _run_planned(plan, t0, address, num_cpus, view)
    except BaseException:
        if fresh and not resume:
            _discard_unstarted(plan.layout)
        raise


def _run_planned(
    plan: SweepPlan, t0: float, address: str | None, num_cpus: int | None, view: SweepView
) -> SweepOutcome:
    """Ray's and Tune's output into the run's log file (its path said once), then :func:`_run_logged`."""
    from csrgan.sweep.logs import capture_ray_output, log_path

    for key, value in (
        ("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1"),  # checkpoint-only reports lack metrics
        ("RAY_AIR_NEW_OUTPUT", "0"),  # our ProgressCallback shows progress; Tune's reporter stays off
        ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0"),
    ):
        os.environ.setdefault(key, value)
    say = view.event
    path = log_path(plan.layout.results)
    say(f"csrgan sweep {plan.cfg.name}: {plan.n_trials} trial(s); results -> {plan.layout.results_uri}")
    if len(plan.objectives) > 1:
        say(_objectives_line(plan))
    try:
        with capture_ray_output(path, warn=say) as ray_out:
            say(f"log: Ray's and Tune's messages and every trial's output -> {path}")
            outcome = _run_logged(plan, t0, address, num_cpus, view, ray_out)
            if ray_out.n_warnings:
                say(f"{ray_out.n_warnings} warning(s), {len(ray_out.seen)} distinct (each shown once above; "
                    "all are in the log)")  # fmt: skip
            return outcome
    finally:
        view.close()


def _run_logged(
    plan: SweepPlan, t0: float, address: str | None, num_cpus: int | None, view: SweepView, ray_out: Any
) -> SweepOutcome:
    from csrgan.sweep.progress import ProgressCallback, SweepProgress

    cfg, say = plan.cfg, view.event
    fit = _start_cluster(plan, address, num_cpus)
    slots = fit.slots
    ray_out.capture_workers()  # from here on, what trials print goes to the log (csrgan's lines are shown)
    _say_cluster(address, slots, say)
    if fit.message:  # an autoscaling cluster: what it may add, or what the sweep waits for
        say(fit.message)
    metric, mode = plan.metric
    progress = SweepProgress(view, metric, mode, total=plan.n_trials, slots=slots, iters=cfg.sr.gan.iters)
    progress.t0 = t0  # elapsed times count from the command's start
    ray_out.on_mark, say, stage_say = progress.mark_line, progress.say, progress.mark_line
    _write_meta(plan, started=True)
    baseline = _bicubic_baseline(plan.cfg, say)
    watcher = _StageWatcher(_start_cyclegan_builds(plan, stage_say), stage_say)  # the DAG: CycleGANs first
    ProgressCallback.attach(progress)  # restored tuners keep their pickled callback: it reports here too
    try:
        grid, interrupted = _fit_noting_interrupt(_tuner(plan, slots, say, baseline))
    finally:
        ProgressCallback.attach(None)
    stage_errors = watcher.join()
    outcome = finish_sweep(plan, grid, t0, interrupted)
    outcome.stage_errors = stage_errors
    outcome.baseline = baseline
    outcome.timing["slots"] = slots
    for name, n in sorted(outcome.stage_reuse.items()):
        say(f"stage {name}: reused by {n} trial(s)")
    _write_meta(plan, started=False, outcome=outcome)
    return outcome


def _say_cluster(address: str | None, slots: int, say: Echo) -> None:
    """Which cluster the sweep runs on: address, nodes, CPUs/GPUs, Ray version, dashboard (Ray's own
    lines about it are in the log)."""
    from csrgan.cluster.where import describe_cluster

    say(f"{describe_cluster(address).line()}; up to {slots} at once")


def _build_demo(cfg: ExperimentConfig) -> None:
    """Build (or reuse) the demo set the config names; after the preflight, before anything else."""
    demo = cfg.data.demo
    if demo is None:
        return
    from csrgan.data.demo import build_demo

    build_demo(demo.dir, seed=demo.seed)


def _discard_unstarted(layout: SweepLayout) -> None:
    """Remove the Tune state of a sweep none of whose trials started (no trial folder, no row)."""
    import shutil

    if layout.remote is not None:
        names = layout.remote.listing(layout.sweep)
        if not any(n.startswith(f"{layout.rel(layout.trials)}/") or n.endswith(".parquet") for n in names):
            layout.remote.delete(layout.rel(layout.tune))
        return
    started = layout.trials.is_dir() and any(layout.trials.iterdir())
    rows = any(layout.results.glob("*.parquet")) or any(layout.results.glob("*/*.parquet"))
    if not started and not rows and layout.tune.exists():
        shutil.rmtree(layout.tune, ignore_errors=True)


def _start_cluster(plan: SweepPlan, address: str | None, num_cpus: int | None) -> Fit:
    """Join or start Ray, check the storage is shared and one trial fits (on a joined cluster, counting
    the node types its autoscaler may launch); returns the parallel slots and what to tell the user."""
    import dataclasses

    import ray

    from csrgan.cluster import connect_error_hint
    from csrgan.cluster import storage as shared
    from csrgan.cluster.capacity import CapacityError, cluster_capacity, trial_fit
    from csrgan.cluster.jobs import ClusterError
    from csrgan.cluster.where import prepare_join
    from csrgan.train.ray_train import ensure_ray

    try:  # `auto` with several clusters on this machine, or a refused token: say so now, not after 20 s
        join = prepare_join(address) if address is not None else None
    except ClusterError as exc:
        raise SweepError(str(exc)) from None
    try:
        ensure_ray(address=join, num_cpus=num_cpus)
    except (ConnectionError, RuntimeError) as exc:
        if address is None:
            raise
        raise SweepError(connect_error_hint(address, exc)) from None
    try:
        if plan.layout.remote is None:  # an object store is shared; a folder must be seen by every node
            shared.check_shared_storage(plan.layout.root)
    except StorageError as exc:
        raise SweepError(str(exc)) from None
    try:  # the embedded cluster has no autoscaler: what is up is all there is
        fit = trial_fit(plan.cfg, cluster_capacity() if address is not None else ray.cluster_resources())
    except CapacityError as exc:
        raise SweepError(str(exc)) from None
    cap = plan.cfg.resources.max_concurrent_trials
    return dataclasses.replace(fit, slots=min(fit.slots, cap or fit.slots))


def _tuner(plan: SweepPlan, slots: int, echo: Echo, baseline: dict[str, float]) -> Any:
    """A new Tuner, or the restored one (``--resume``); the trainable is :func:`run_trial`."""
    from ray import tune

    from csrgan.sweep.progress import ProgressCallback
    from csrgan.sweep.study import journal_callbacks, pull_journal

    cfg = plan.cfg
    runtime = SweepRuntime(
        cfg.model_dump(mode="json"), plan.layout, git_commit(), _param_names(cfg), dict(baseline)
    )
    trainable = tune.with_resources(tune.with_parameters(run_trial, runtime=runtime), trial_resources(cfg))
    tune_path, filesystem = _tune_storage(plan.layout)
    if plan.resume:
        echo("resuming: finished trials are kept; unfinished ones continue from their checkpoints")
        pull_journal(plan.layout)
        return tune.Tuner.restore(
            f"{tune_path}/{plan.layout.tune.name}",
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=filesystem,
        )
    metric, mode = plan.metric
    optuna = cfg.search is not None and cfg.search.method == "optuna"
    return tune.Tuner(
        trainable,
        param_space=_param_space(plan),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=_search_alg(plan) if optuna else None,
            scheduler=_scheduler(cfg),
            num_samples=cfg.search.num_samples if optuna else 1,  # type: ignore[union-attr]
            max_concurrent_trials=slots,
        ),
        run_config=tune.RunConfig(
            name=plan.layout.tune.name,
            storage_path=tune_path,
            storage_filesystem=filesystem,
            callbacks=[
                ProgressCallback(metric=metric, mode=mode, total=plan.n_trials),
                *journal_callbacks(plan.layout, optuna),
            ],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )


def _tune_storage(layout: SweepLayout) -> tuple[str, Any]:
    """Tune's ``storage_path`` and ``storage_filesystem``: the results folder, or on object storage the
    store itself (Tune writes its experiment state there through pyarrow)."""
    if layout.remote is None:
        return str(layout.results), None
    fs, _ = layout.remote.fs()
    return layout.remote.path(layout.sweep), fs


def _param_names(cfg: ExperimentConfig) -> tuple[str, ...]:
    """The searched keys each row records (``param.*``): the grid's and the arms', first seen first."""
    return cfg.search.param_names() if cfg.search else ()


def _param_space(plan: SweepPlan) -> dict[str, Any]:
    from ray import tune

    s = plan.cfg.search
    if s is not None and s.method == "optuna":
        return {"seed": s.seeds[0]}  # constants only: the space is Optuna's define-by-run
    return {"trial": tune.grid_search([{"params": t.params, "seed": t.seed} for t in plan.trials])}


def _objectives_line(plan: SweepPlan) -> str:
    """The sweep-start line of a multi-objective sweep: its objectives, and what does not apply."""
    s = plan.cfg.search
    assert s is not None
    goals = ", ".join(f"{m.goal} {m.name}" for m in s.targets)
    how = (
        f"Optuna {'NSGA-II' if s.sampler == 'nsga2' else 'multi-objective TPE'}"
        if s.method == "optuna"
        else f"{s.method}: every configuration runs"
    )
    return (
        f"objectives: {goals} ({how}; the summary reports the Pareto front; the live view's 'best' is the "
        "first); no scheduler or pruning applies to several objectives"
    )


def _sampler(s: SearchConfig) -> Any:
    """``search.sampler``: TPE (one or several objectives) or NSGA-II (several), seeded."""
    import optuna

    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.sampler_seed)
    return optuna.samplers.TPESampler(seed=s.sampler_seed)


def _search_alg(plan: SweepPlan) -> Any:
    """Optuna through Tune. Several objectives: ``metric``/``mode`` are lists (the study gets one
    direction each); Tune's own ``TuneConfig`` metric stays the first objective. Every report carries
    the last evaluation of every test set (:class:`csrgan.sweep.recorder.TrialReporter`), so a trial's
    final result holds all objectives; one that diverged before its first evaluation holds none, and
    Optuna records it as failed."""
    from ray.tune.search.optuna import OptunaSearch

    from csrgan.sweep.study import study_storage

    s = plan.cfg.search
    assert s is not None
    names, modes = (list(x) for x in zip(*plan.objectives, strict=True))
    several = len(names) > 1
    return OptunaSearch(
        space=optuna_space(s),
        metric=names if several else names[0],
        mode=modes if several else modes[0],
        sampler=_sampler(s),
        study_name=plan.cfg.name,
        storage=study_storage(plan.layout),
    )


def _scheduler(cfg: ExperimentConfig) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sched = cfg.search.scheduler if cfg.search else None
    if sched is None or sched.type == "fifo":
        return FIFOScheduler()
    # time_attr is the GAN step we report: monotonic across resume (Tune's training_iteration is not)
    return ASHAScheduler(
        time_attr="step",
        metric=None,
        mode=None,
        grace_period=sched.grace_period or cfg.sr.eval_every,
        max_t=sched.max_t or cfg.sr.gan.iters,
        reduction_factor=sched.reduction_factor,
    )


def _bicubic_baseline(cfg: ExperimentConfig, echo: Echo) -> dict[str, float]:
    """MATLAB-bicubic PSNR/SSIM on every test set: the number a trained model has to beat."""
    from csrgan.evaluation import evaluate_bicubic

    metrics = [m for m in cfg.eval.metrics if m in ("psnr", "ssim")]
    base = evaluate_bicubic(cfg.data.test_sets, cfg.data.scale, metrics)
    if base:
        echo("bicubic baseline: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(base.items())))
    return base


_REFUSED = "built, and REFUSED by the quality gate"


def _build_cyclegan_task(cfg_json: dict[str, Any], layout: SweepLayout) -> str:
    """Ray task: build (or reuse) one CycleGAN stage before the trials that need it start."""
    from csrgan.config import validate_config
    from csrgan.train.degradation import PoorStageError

    cfg = validate_config(cfg_json)
    layout = layout.here()  # object storage: this node's mirror
    try:
        out = build_shared_stages(cfg, layout, built_by="driver", only=("cyclegan",), notify=_task_line)
    except PoorStageError as exc:
        return f"{_REFUSED}: {exc}"
    done, q = out["cyclegan"], out["cyclegan"].info.get("quality", {})
    how = "reused" if done.reused else f"built in {done.info.get('wall_s', 0):.0f} s"
    accepted = " (accepted: cyclegan.accept_poor)" if q.get("accepted_poor") else ""
    return f"{how}, quality {q.get('verdict')}{accepted}"


def _task_line(line: str) -> None:
    """A stage task's messages, except how it ended: the driver says that itself, with the verdict."""
    if ": built in " not in line and ": reused" not in line:
        print(line, file=sys.stderr, flush=True)


def _start_cyclegan_builds(plan: SweepPlan, echo: Echo) -> list[tuple[Any, str]]:
    import ray

    wanted: dict[str, ExperimentConfig] = {}
    for t in plan.trials:
        tc = trial_config(plan.cfg, t)
        if "cyclegan" in shared_stages(tc):
            wanted.setdefault(stage_ref("cyclegan", tc, plan.layout).key, tc)
    tasks = []
    for tc in wanted.values():
        ref = stage_ref("cyclegan", tc, plan.layout)
        if ref.is_done():
            echo(f"stage {ref.id}: reused ({ref.dir})")
            continue
        res = trial_resources(tc)
        task = ray.remote(_build_cyclegan_task).options(num_cpus=res["CPU"], num_gpus=res.get("GPU", 0))
        tasks.append((task.remote(tc.model_dump(mode="json"), plan.layout), ref.id))
        echo(
            f"stage {ref.id}: queued as a Ray task (for the trials with sr.lr_source cyclegan, mix_prob > 0)"
        )
    return tasks


def _report_stage_tasks(tasks: list[tuple[Any, str]], echo: Echo) -> dict[str, str]:
    """Say how each stage build ended; returns the failed or refused ones (``<stage>-<key> -> why``)."""
    import ray

    failed: dict[str, str] = {}
    for ref, stage_id in tasks:
        try:
            verdict = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - surfaced to the user; trials that needed it failed too
            failed[stage_id] = error_headline(str(exc))
            echo(f"stage {stage_id}: FAILED ({failed[stage_id]})")
            continue
        echo(f"stage {stage_id}: {verdict}")
        if verdict.startswith(_REFUSED):
            failed[stage_id] = verdict.split("\n", 1)[0]
    return failed


class _StageWatcher:
    """Says how each stage task ended as soon as it ends (a thread waiting on them while Tune runs);
    :meth:`join` returns the failed or refused ones."""

    def __init__(self, tasks: list[tuple[Any, str]], echo: Echo) -> None:
        import threading

        self.left, self.failed, self.echo = list(tasks), {}, echo
        self._thread = threading.Thread(target=self._watch, name="csrgan-stage-tasks", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import ray

        while self.left:
            ready, _ = ray.wait([ref for ref, _ in self.left], num_returns=1)
            done = [t for t in self.left if t[0] in ready]
            self.failed |= _report_stage_tasks(done, self.echo)
            self.left = [t for t in self.left if t[0] not in ready]

    def join(self) -> dict[str, str]:
        self._thread.join()
        if self.left:  # the watcher died (Ray went away?): ask once more, here
            self.failed |= _report_stage_tasks(self.left, self.echo)
        return self.failed


def error_headline(text: str) -> str:
    """The line that says what went wrong in a (Ray-wrapped) traceback: the exception line that ends the
    last traceback block (``csrgan...PoorStageError: ...``), not Ray's wrapper or the frames. Ray 2.60
    writes its tracebacks without the ``Traceback (most recent call last):`` header (a coloured
    ``ray::<task>() (pid=...)`` line instead), so a block is recognised by its indented frame lines."""
    from csrgan.sweep.logs import strip_ansi

    lines = [strip_ansi(ln).rstrip() for ln in text.strip().splitlines()]
    wrappers = ("Failure # ", "ray::", "Traceback (", "During handling of", "The above exception")
    found, in_frames = None, False
    for ln in lines:
        if ln.startswith((" ", "\t")):
            in_frames = True
        elif ln and in_frames and not ln.startswith(wrappers):
            found, in_frames = ln, False
        elif ln:
            in_frames = False
    if found:
        return found[:300]
    shown = [ln for ln in lines if ln.strip()]
    return shown[0][:300] if shown else "(no message)"


def _fit_noting_interrupt(tuner: Any) -> tuple[Any, bool]:
    """``tuner.fit()``, and whether it ended on Ctrl-C.

    On the first SIGINT Tune stops gracefully and puts back the handler that was installed before
    ``fit()`` (on a normal end it leaves its own). So: install a sentinel first, look which handler is
    installed afterwards, then restore the caller's.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return tuner.fit(), False
    previous = signal.getsignal(signal.SIGINT)

    def sentinel(signum: int, frame: Any) -> None:  # only reached by a second Ctrl-C after fit()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, sentinel)
    try:
        grid = tuner.fit()
        interrupted = signal.getsignal(signal.SIGINT) is sentinel
    finally:
        signal.signal(signal.SIGINT, previous)
    return grid, interrupted


# -------------------------------------------------------------------------------------------- finish
def finish_sweep(plan: SweepPlan, grid: Any, t0: float, interrupted: bool) -> SweepOutcome:
    """Map Tune's trial states onto row statuses; list what is unfinished.

    After Ctrl-C, Tune may report a trial it was running as TERMINATED: then only our own rows say
    whether it finished, so anything not ``finished``/``diverged`` on disk is unfinished (resumable).
    """
    from csrgan.results import ResultsStore

    store = ResultsStore(plan.layout.results_root, plan.cfg.name)
    outcome = SweepOutcome(
        results_dir=plan.layout.results, wall_s=time.time() - t0, results_uri=plan.layout.results_uri
    )
    train_s, outcome.stage_reuse = _training_seconds(plan.layout, t0)
    for trial in getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []:
        tid = trial.trial_id
        df = store.read_trial(tid)
        on_disk = str(df["status"].iloc[0]) if df is not None and not df.empty else None
        status = _trial_status(plan.cfg, trial.status, on_disk, df, interrupted)
        if status == "unfinished":
            outcome.unfinished.append(tid)
        if status == "error":
            outcome.errors[tid] = f"{_trial_label(trial)}: {_trial_error(trial)}"
        outcome.statuses[tid] = status
        if df is not None and not df.empty and status not in ("unfinished", on_disk):
            store.write_trial(tid, _records(df), status=status)
    outcome.timing = {"wall_s": round(outcome.wall_s, 1), "train_s": round(train_s, 1)}
    return outcome


def _trial_label(trial: Any) -> str:
    spec = (getattr(trial, "config", None) or {}).get("trial") or {}
    params = {**spec.get("params", {}), **({"seed": spec["seed"]} if "seed" in spec else {})}
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(optuna trial)"


def _trial_error(trial: Any) -> str:
    try:
        text = trial.get_error()
    except Exception:  # noqa: BLE001 - the error file may be gone; say so rather than fail the summary
        text = None
    return error_headline(text) if text else "(no error text recorded by Tune)"


def _trial_status(
    cfg: ExperimentConfig, tune_status: str, on_disk: str | None, df: Any, interrupted: bool
) -> str:
    if on_disk in ("finished", "diverged"):
        return on_disk
    if tune_status == "TERMINATED" and not interrupted:
        # a scheduler (ASHA) stopped it, possibly at max_t right after its last report
        return "finished" if df is not None and _reached_end(df, cfg) else "stopped"
    if tune_status == "ERROR":
        return "error"
    return "unfinished"


def _reached_end(df: Any, cfg: ExperimentConfig) -> bool:
    gan = df[df["phase"] == "gan"]
    if gan.empty:
        return False
    iters = gan["param.sr.gan.iters"].iloc[0] if "param.sr.gan.iters" in gan else cfg.sr.gan.iters
    return int(gan["step"].max()) >= int(iters)


def _training_seconds(layout: SweepLayout, t0: float) -> tuple[float, dict[str, int]]:
    """Seconds spent in trainers during this run (trials' GAN phases and the stages they built, plus
    stages the driver's tasks built), and how many trials reused each stage artefact."""
    total = 0.0
    reuse: dict[str, int] = {}

    def is_timing(n: str) -> bool:
        return n.count("/") == 1 and n.endswith("/timing.json")

    def is_info(n: str) -> bool:
        return n.startswith("cyclegan-") and n.count("/") == 1 and n.endswith("/stage.json")

    for t in _recent_json(layout, layout.trials, is_timing, t0):
        total += float(t.get("gan_s", 0.0)) + sum(t.get("stages_built_s", {}).values())
        for name in t.get("stages_reused", []):
            reuse[name] = reuse.get(name, 0) + 1
    for info in _recent_json(layout, layout.stages, is_info, t0):
        if info.get("status") == "finished" and info.get("built_by") == "driver":
            total += float(info.get("wall_s", 0.0))
    return total, reuse


def _recent_json(
    layout: SweepLayout, folder: Path, wanted: Callable[[str], bool], t0: float
) -> list[dict[str, Any]]:
    """The JSON files under ``folder`` whose relative name is ``wanted``, written since ``t0``: from the
    store on object storage (the driver's mirror does not hold what trials wrote), else from the folder."""
    out = []
    if layout.remote is not None:
        rel = layout.rel(folder)
        for name, (_, mtime) in layout.remote.listing(rel).items():
            data = layout.remote.read_bytes(f"{rel}/{name}") if wanted(name) and mtime >= t0 else None
            if data is not None:
                out.append(json.loads(data))
        return out
    for f in sorted(folder.glob("*/*.json")) if folder.is_dir() else []:
        if wanted(f.relative_to(folder).as_posix()) and f.stat().st_mtime >= t0:
            out.append(json.loads(f.read_text()))
    return out


def _records(df: Any) -> list[dict[str, Any]]:
    import math

    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


def _write_meta(plan: SweepPlan, started: bool, outcome: SweepOutcome | None = None) -> None:
    layout = plan.layout
    path = layout.meta
    if started and layout.remote is not None:  # the store's copy is the truth (resume on a new mirror)
        data = layout.remote.read_bytes(layout.rel(path))
        if data is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    meta: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if started:
        run = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "argv": sys.argv}
        meta.setdefault("runs", []).append(run)
        meta["config"] = plan.cfg.model_dump(mode="json")
        meta["trials"] = [t.label() for t in plan.trials]
    if outcome is not None:
        meta["bicubic_baseline"] = outcome.baseline
        meta["runs"][-1].update(
            {
                "wall_s": round(outcome.wall_s, 1),
                "statuses": outcome.statuses,
                "unfinished": outcome.unfinished,
                "errors": outcome.errors,
                "stage_errors": outcome.stage_errors,
                "timing": outcome.timing,
            }
        )
    tmp = path.with_name("._sweep.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(path)
    if layout.remote is not None:
        layout.remote.write_bytes(layout.rel(path), path.read_bytes())


__all__ = [
    "SweepError",
    "SweepOutcome",
    "SweepPlan",
    "check_fits",
    "embedded_resources",
    "error_headline",
    "devices_of",
    "finish_sweep",
    "plan_sweep",
    "plan_trials",
    "run_sweep",
    "sweep_configs",
]
