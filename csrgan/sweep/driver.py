"""Run a sweep: validate, lay out storage, start Ray, pre-build stages, run Tune, finish statuses, summarise.

Storage layout (``<storage>/<sweep>/``)::

    trial-<id>.parquet   the results, one file per trial (csrgan.results)
    _sweep.json          config, trial plan, timings, stage reuse, orchestration overhead
    _optuna.db           the Optuna study (method optuna): a resumed sweep keeps its searcher state
    _tune/               Ray Tune's experiment state (Tuner.restore on --resume)
    _trials/<id>/        per-trial artefacts (comparison grids, final generator)
    _train/              Ray Train runs of multi-worker trials
and ``<storage>/_stages/`` holds CycleGAN / pre-training artefacts shared by all sweeps under
``<storage>``. Names starting with ``_`` are ignored by ``pd.read_parquet(<storage>/<sweep>)``.
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
from typing import Any

from csrgan.config import ExperimentConfig, cyclegan_stage_key
from csrgan.sweep.recorder import git_commit
from csrgan.sweep.space import TrialSpec, expand_trials, optuna_space, trial_config
from csrgan.sweep.stages import needs_cyclegan, stage_ref
from csrgan.sweep.trial import SweepRuntime, devices_of, run_trial

TUNE_DIR = "_tune"


class SweepError(RuntimeError):
    """A problem found before anything ran (storage, resources, resume state). Message is user-facing."""


@dataclass
class SweepOutcome:
    results_dir: Path
    wall_s: float
    statuses: dict[str, str] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)
    stage_log: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    stage_reuse: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.unfinished


def storage_root_of(cfg: ExperimentConfig, storage: str | None) -> Path:
    root = storage or cfg.storage
    if "://" in root and not root.startswith("file://"):
        raise SweepError(
            f"storage {root!r}: object-store URIs are not supported for sweeps yet; use a folder every node "
            "can see (a shared filesystem path)"
        )
    return Path(root.removeprefix("file://")).expanduser().resolve()


def plan_trials(cfg: ExperimentConfig) -> list[TrialSpec]:
    """Grid/random trials in run order: those that need no CycleGAN first, so they run while it trains."""
    if cfg.search is None:
        return [TrialSpec(params={}, seed=cfg.seed)]
    if cfg.search.method == "optuna":
        return []
    trials = expand_trials(cfg.search)
    return sorted(trials, key=lambda t: needs_cyclegan(trial_config(cfg, t)))  # stable: keeps grid order


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """A 1-worker trial runs its trainer in-process; an N-worker trial is a 1-CPU driver + N Train workers."""
    r = cfg.resources
    if r.workers == 1:
        return {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}
    return {"CPU": 1.0}


def check_fits(cfg: ExperimentConfig, cluster: dict[str, float]) -> int:
    """How many trials fit at once; raise if not even one does (Ray would otherwise wait forever)."""
    r = cfg.resources
    need_cpu = r.cpus_per_worker * r.workers + (1.0 if r.workers > 1 else 0.0)
    need_gpu = r.gpus_per_worker * r.workers
    have_cpu, have_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if need_cpu > have_cpu or need_gpu > have_gpu:
        raise SweepError(
            f"one trial needs {need_cpu:g} CPU and {need_gpu:g} GPU "
            f"(resources.workers={r.workers} × cpus_per_worker={r.cpus_per_worker:g}, gpus_per_worker="
            f"{r.gpus_per_worker:g}{', plus 1 CPU for the trial driver' if r.workers > 1 else ''}), "
            f"but the cluster has {have_cpu:g} CPU and {have_gpu:g} GPU"
        )
    fits = int(have_cpu // need_cpu)
    if need_gpu:
        fits = min(fits, int(have_gpu // need_gpu))
    return max(1, fits)


def _build_stage_task(cfg_json: dict[str, Any], storage_root: str) -> str:
    """Ray task: build (or reuse) one CycleGAN stage before the trials that need it start."""
    from csrgan.config import validate_config
    from csrgan.sweep.trial import build_stages, set_threads

    cfg = validate_config(cfg_json)
    set_threads(cfg)
    cfg_cg_only = cfg.model_copy(
        update={"sr": cfg.sr.model_copy(update={"pretrain": cfg.sr.pretrain.model_copy(update={"iters": 0})})}
    )
    out = build_stages(cfg_cg_only, Path(storage_root), built_by="driver")
    return "reused" if out["cyclegan"].reused else "built"


def run_sweep(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    address: str | None = None,
    storage: str | None = None,
    num_cpus: int | None = None,
    echo: Callable[[str], None] = print,
) -> SweepOutcome:
    """Run (or resume) the sweep described by a resolved config (see ``csrgan.data.layout.resolve_data``)."""
    import ray
    from ray import tune

    from csrgan.sweep.progress import ProgressCallback
    from csrgan.train.ray_train import ensure_ray

    t0 = time.time()
    root = storage_root_of(cfg, storage)
    results_dir = root / cfg.name
    tune_path = results_dir / TUNE_DIR
    if resume and not tune_path.is_dir():
        raise SweepError(f"--resume: no sweep state at {tune_path}; start it without --resume")
    if not resume and tune_path.exists():
        raise SweepError(
            f"sweep {cfg.name!r} already has state at {results_dir}. Continue it with --resume, "
            f"or start a new one with another name (--set name=...) or storage (--storage DIR)"
        )
    results_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # checkpoint-only reports lack metrics
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our ProgressCallback prints progress; Tune stays quiet
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    cfg = _lpips_preflight(cfg, echo)
    trials = plan_trials(cfg)
    params = tuple(cfg.search.parameters) if cfg.search else ()
    runtime = SweepRuntime(
        base=cfg.model_dump(mode="json"),
        sweep=cfg.name,
        storage_root=str(root),
        git_commit=git_commit(),
        param_names=params,
    )

    try:
        ensure_ray(address=address, num_cpus=num_cpus)
    except (ConnectionError, RuntimeError) as exc:
        if address is None:
            raise
        from csrgan.cluster import connect_error_hint

        raise SweepError(connect_error_hint(address, exc)) from None
    from csrgan.cluster import StorageError, check_shared_storage

    try:
        check_shared_storage(root)  # multi-node: every node must see the storage folder
    except StorageError as exc:
        raise SweepError(str(exc)) from None
    slots = check_fits(cfg, ray.cluster_resources())
    max_conc = min(slots, cfg.resources.max_concurrent_trials or slots)
    echo(
        f"csrgan sweep {cfg.name}: {len(trials) or cfg.search.num_samples} trial(s), "
        f"up to {max_conc} at once; "
        f"results -> {results_dir}"
    )
    _write_meta(results_dir, cfg, trials, started=True)
    baseline = _bicubic_baseline(cfg, echo)

    # 1. Stage DAG: start each distinct CycleGAN now, as Ray tasks, while p=0 trials already run.
    stage_tasks = _start_cyclegan_builds(cfg, trials, root, echo)

    # 2. The trainable: one function per trial, resources per trial.
    trainable = tune.with_resources(tune.with_parameters(run_trial, runtime=runtime), trial_resources(cfg))
    metric, mode = _metric_mode(cfg)
    progress = ProgressCallback(metric=metric, mode=mode, echo=echo, total=len(trials) or None)

    if resume:
        tuner = tune.Tuner.restore(
            str(tune_path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
        echo("resuming: finished trials are kept; unfinished ones continue from their checkpoints")
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(cfg, trials),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                search_alg=_search_alg(cfg, results_dir, metric, mode),
                scheduler=_scheduler(cfg, metric, mode),
                num_samples=cfg.search.num_samples if cfg.search and cfg.search.method == "optuna" else 1,
                max_concurrent_trials=max_conc,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=str(results_dir),
                callbacks=[progress],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=1),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
    if resume:  # restored tuners keep their own run config; attach live progress anyway
        tuner._local_tuner._run_config.callbacks = [progress]  # noqa: SLF001
    grid, interrupted = _fit_noting_interrupt(tuner)

    for ref, label in stage_tasks:
        try:
            echo(f"stage cyclegan {label}: {ray.get(ref)}")
        except Exception as exc:  # noqa: BLE001 - surfaced to the user; trials that needed it failed too
            echo(f"stage cyclegan {label}: FAILED ({exc})")

    outcome = _finish(cfg, grid, results_dir, root, t0, interrupted)
    outcome.baseline = baseline
    outcome.timing["slots"] = max_conc
    for name, n in sorted(outcome.stage_reuse.items()):
        echo(f"stage {name}: reused by {n} trial(s)")
    _write_meta(results_dir, cfg, trials, started=False, outcome=outcome)
    return outcome


def _lpips_preflight(cfg: ExperimentConfig, echo: Callable[[str], None]) -> ExperimentConfig:
    """Find missing LPIPS weights before any trial starts: fail (not optional) or say so once, loudly."""
    if "lpips" not in cfg.eval.metrics or cfg.eval.lpips.random_backbone:
        return cfg
    from csrgan.weights import MissingWeightsError, resolve

    backbone = "alexnet" if cfg.eval.lpips.net == "alex" else "vgg16"
    try:
        resolve(backbone, cfg.eval.lpips.source)
    except MissingWeightsError as exc:
        if not cfg.eval.lpips.optional:
            raise SweepError(f"{exc}\n(or mark LPIPS optional: eval.lpips.optional: true)") from None
        bar = "!" * 78
        echo(
            f"{bar}\nLPIPS DISABLED for this sweep: the {backbone} backbone weights are missing and "
            f"eval.lpips.optional is true,\nso every lpips value is left empty (null).\n{exc}\n{bar}"
        )
        metrics = [m for m in cfg.eval.metrics if m != "lpips"]
        return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"metrics": metrics})})
    return cfg


def _bicubic_baseline(cfg: ExperimentConfig, echo: Callable[[str], None]) -> dict[str, float]:
    """MATLAB-bicubic PSNR/SSIM on every test set: the number a trained model has to beat."""
    from csrgan.train.evaluation import evaluate_bicubic

    metrics = [m for m in cfg.eval.metrics if m in ("psnr", "ssim")]
    base = evaluate_bicubic(cfg.data.test_sets, cfg.data.scale, metrics)
    if base:
        echo("bicubic baseline: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(base.items())))
    return base


def _metric_mode(cfg: ExperimentConfig) -> tuple[str, str]:
    if cfg.search is None:
        first = cfg.data.test_sets[0].name if cfg.data.test_sets else "unknown"
        return f"{first}/psnr", "max"
    return cfg.search.metric.name, "max" if cfg.search.metric.goal == "maximize" else "min"


def _param_space(cfg: ExperimentConfig, trials: list[TrialSpec]) -> dict[str, Any]:
    from ray import tune

    if cfg.search is not None and cfg.search.method == "optuna":
        return {"seed": cfg.search.seeds[0]}  # constants only: the space is Optuna's define-by-run
    return {"trial": tune.grid_search([{"params": t.params, "seed": t.seed} for t in trials])}


def _search_alg(cfg: ExperimentConfig, results_dir: Path, metric: str, mode: str) -> Any:
    if cfg.search is None or cfg.search.method != "optuna":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{results_dir / '_optuna.db'}")
    sampler = optuna.samplers.TPESampler(seed=cfg.search.sampler_seed)
    return OptunaSearch(
        space=optuna_space(cfg.search),
        metric=metric,
        mode=mode,
        sampler=sampler,
        study_name=cfg.name,
        storage=storage,
    )


def _scheduler(cfg: ExperimentConfig, metric: str, mode: str) -> Any:
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


def _start_cyclegan_builds(
    cfg: ExperimentConfig, trials: list[TrialSpec], root: Path, echo: Callable[[str], None]
) -> list[tuple[Any, str]]:
    import ray

    wanted: dict[str, ExperimentConfig] = {}
    for t in trials:
        tc = trial_config(cfg, t)
        if needs_cyclegan(tc):
            wanted.setdefault(cyclegan_stage_key(tc), tc)
    tasks = []
    for key, tc in wanted.items():
        ref = stage_ref("cyclegan", tc, root)
        if ref.is_done():
            echo(f"stage cyclegan {key}: reused from {ref.dir}")
            continue
        res = trial_resources(tc)
        task = ray.remote(_build_stage_task).options(num_cpus=res["CPU"], num_gpus=res.get("GPU", 0))
        tasks.append((task.remote(tc.model_dump(mode="json"), str(root)), key))
        echo(f"stage cyclegan {key}: building (used by the trials with sr.mix_prob > 0)")
    return tasks


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


def _finish(
    cfg: ExperimentConfig, grid: Any, results_dir: Path, root: Path, t0: float, interrupted: bool
) -> SweepOutcome:
    """Map Tune's trial states onto row statuses; list what is unfinished.

    After Ctrl-C, Tune may report a trial it was running as TERMINATED: then only our own rows say
    whether it finished, so anything not ``finished``/``diverged`` on disk is unfinished (resumable).
    """
    from csrgan.results import ResultsStore

    store = ResultsStore(str(root), cfg.name)
    outcome = SweepOutcome(results_dir=results_dir, wall_s=time.time() - t0)
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    train_s, outcome.stage_reuse = _training_seconds(results_dir, root, t0)
    for trial in trials:
        tid = trial.trial_id
        df = store.read_trial(tid)
        file_status = str(df["status"].iloc[0]) if df is not None and not df.empty else None
        if file_status in ("finished", "diverged"):
            status = file_status
        elif trial.status == "TERMINATED" and not interrupted:
            # a scheduler (ASHA) stopped it, possibly at max_t right after its last report
            status = "finished" if df is not None and _reached_end(df, cfg) else "stopped"
        elif trial.status == "ERROR":
            status = "diverged" if file_status == "diverged" else "error"
        else:
            status = "unfinished"
            outcome.unfinished.append(tid)
        outcome.statuses[tid] = status
        if df is not None and not df.empty and status not in ("unfinished", file_status):
            store.write_trial(tid, _records(df), status=status)
    outcome.timing = {"wall_s": round(outcome.wall_s, 1), "train_s": round(train_s, 1)}
    return outcome


def _reached_end(df: Any, cfg: ExperimentConfig) -> bool:
    gan = df[df["phase"] == "gan"]
    if gan.empty:
        return False
    iters = gan["param.sr.gan.iters"].iloc[0] if "param.sr.gan.iters" in gan else cfg.sr.gan.iters
    return int(gan["step"].max()) >= int(iters)


def _training_seconds(results_dir: Path, root: Path, t0: float) -> tuple[float, dict[str, int]]:
    """Seconds spent in trainers during this run (trials' GAN phases and the stages they built, plus
    stages the driver's tasks built), and how many trials reused each stage artefact."""
    total = 0.0
    reuse: dict[str, int] = {}
    for f in (results_dir / "_trials").glob("*/timing.json"):
        if f.stat().st_mtime < t0:
            continue
        t = json.loads(f.read_text())
        total += float(t.get("gan_s", 0.0)) + sum(t.get("stages_built_s", {}).values())
        for name in t.get("stages_reused", []):
            reuse[name] = reuse.get(name, 0) + 1
    for info_path in (root / "_stages").glob("cyclegan-*/stage.json"):
        info = json.loads(info_path.read_text())
        if (
            info_path.stat().st_mtime >= t0
            and info.get("status") == "finished"
            and info.get("built_by") == "driver"
        ):
            total += float(info.get("wall_s", 0.0))
    return total, reuse


def _records(df: Any) -> list[dict[str, Any]]:
    import math

    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


def _write_meta(
    results_dir: Path,
    cfg: ExperimentConfig,
    trials: list[TrialSpec],
    started: bool,
    outcome: SweepOutcome | None = None,
) -> None:
    path = results_dir / "_sweep.json"
    meta: dict[str, Any] = {}
    if path.is_file():
        meta = json.loads(path.read_text())
    if started:
        meta.setdefault("runs", []).append(
            {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "argv": sys.argv}
        )
        meta["config"] = cfg.model_dump(mode="json")
        meta["trials"] = [t.label() for t in trials]
    if outcome is not None:
        meta["bicubic_baseline"] = outcome.baseline
        meta["runs"][-1].update(
            {
                "wall_s": round(outcome.wall_s, 1),
                "statuses": outcome.statuses,
                "unfinished": outcome.unfinished,
                "timing": outcome.timing,
            }
        )
    tmp = path.with_name("._sweep.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(path)


__all__ = ["SweepError", "SweepOutcome", "run_sweep", "plan_trials", "check_fits", "devices_of"]
