"""One Tune trial: make sure its stages exist, run the GAN phase, record rows, report to Tune.

1. The trial's config = the sweep's base config + the trial's parameters and seed (validated again).
2. Stages: the CycleGAN (only when p > 0) and the SRResNet pre-training are fetched from
   ``<storage>/_stages`` or built there under a lock (one builder, everyone else reuses).
3. The GAN phase runs the trainer with a context that reports to Tune and records Parquet rows.
   * 1 worker per trial: the trainer runs in this (trial) process. No Train controller, no worker
     group: that saves the ~25-30 s fixed cost of a Train run per trial (see docs/sweeps.md).
   * N > 1 workers: a ``TorchTrainer`` (DDP) runs inside the trial; rank 0 records rows and
     ``TuneReportCallback`` forwards its reports to Tune.
4. Every report carries the last evaluation's metrics forward so ASHA/Optuna always see the metric.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from csrgan.config import ExperimentConfig, config_hash, validate_config
from csrgan.metrics import PROTOCOL
from csrgan.results import ResultsStore, flatten_params
from csrgan.sweep.recorder import TrialRecorder
from csrgan.sweep.space import TrialSpec, trial_config
from csrgan.sweep.stages import StageOutcome, ensure_stage, needs_cyclegan, needs_pretrain, stage_ref
from csrgan.train.context import LocalContext

STATUS_OK, STATUS_DIVERGED = "finished", "diverged"


@dataclass(frozen=True)
class SweepRuntime:
    """What every trial needs from the driver (pickled once into Ray's object store)."""

    base: dict[str, Any]  # the resolved ExperimentConfig as JSON
    sweep: str
    storage_root: str  # absolute folder: results, stages and Tune state live below it
    git_commit: str | None
    param_names: tuple[str, ...]

    @property
    def results_dir(self) -> Path:
        return Path(self.storage_root) / self.sweep

    def base_config(self) -> ExperimentConfig:
        return validate_config(self.base, source=f"sweep {self.sweep}")


def spec_from_tune_config(tune_config: Mapping[str, Any], base: ExperimentConfig) -> TrialSpec:
    """Grid/random trials arrive as ``{"trial": {"params":..., "seed":...}}``; Optuna's as flat params."""
    if "trial" in tune_config:
        t = tune_config["trial"]
        return TrialSpec(params=dict(t["params"]), seed=int(t["seed"]))
    params = {k: v for k, v in tune_config.items() if k != "seed"}
    seed = int(tune_config.get("seed", base.search.seeds[0] if base.search else base.seed))
    return TrialSpec(params=params, seed=seed)


def devices_of(cfg: ExperimentConfig) -> float:
    r = cfg.resources
    return r.workers * (r.gpus_per_worker if r.gpus_per_worker > 0 else r.cpus_per_worker)


def set_threads(cfg: ExperimentConfig) -> None:
    n = cfg.resources.threads_per_worker or max(1, int(cfg.resources.cpus_per_worker))
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------- stages
def build_stages(
    cfg: ExperimentConfig, storage_root: Path, built_by: str = "trial"
) -> dict[str, StageOutcome]:
    """Fetch or build this config's CycleGAN and pre-training stages (in this process)."""
    from csrgan.train.cyclegan import train_cyclegan
    from csrgan.train.srgan import train_sr

    out: dict[str, StageOutcome] = {}
    cg_final: Path | None = None
    if needs_cyclegan(cfg):
        ref = stage_ref("cyclegan", cfg, storage_root)
        out["cyclegan"] = ensure_stage(
            ref,
            lambda d: _run_local_or_ray("cyclegan", cfg, d, lambda ctx: train_cyclegan(cfg, ctx)),
            describe={
                "cyclegan": cfg.cyclegan.model_dump(mode="json"),
                "built_by": built_by,
            },
        )
        cg_final = ref.final
    if needs_pretrain(cfg):
        ref = stage_ref("pretrain", cfg, storage_root)
        out["pretrain"] = ensure_stage(
            ref,
            lambda d: _run_local_or_ray(
                "pretrain",
                cfg,
                d,
                lambda ctx: train_sr(cfg, ctx, phase="pretrain", cyclegan_g=cg_final),
                cyclegan_g=cg_final,
            ),
            describe={
                "pretrain": cfg.sr.pretrain.model_dump(mode="json"),
                "mix_prob": cfg.sr.mix_prob,
                "seed": cfg.seed,
                "built_by": built_by,
            },
        )
    return out


def _run_local_or_ray(
    stage: str, cfg: ExperimentConfig, stage_dir: Path, local_fn: Any, cyclegan_g: Path | None = None
) -> dict[str, Any]:
    """Run a shared stage in this process (1 worker) or as a Ray Train run (N workers, DDP)."""
    if cfg.resources.workers == 1:
        return dict(local_fn(LocalContext(out_dir=stage_dir, device=_device(cfg))) or {})
    from csrgan.train.ray_train import run_stage

    extra = {"cyclegan_g": str(cyclegan_g)} if cyclegan_g is not None and stage != "cyclegan" else {}
    result = run_stage(stage, cfg, storage_path=stage_dir, name="train", extra=extra)
    if result.final and not (stage_dir / "final").exists():
        shutil.copytree(result.final, stage_dir / "final")
    return dict(result.metrics or {})


def _device(cfg: ExperimentConfig) -> torch.device:
    return torch.device("cuda" if cfg.resources.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu")


# -------------------------------------------------------------------------------------------- contexts
class TuneTrialContext:
    """TrainContext for a 1-worker trial running inside the Tune trial process."""

    rank = 0
    world_size = 1

    def __init__(self, out_dir: Path, device: torch.device) -> None:
        self.out_dir = out_dir
        self.device = device
        out_dir.mkdir(parents=True, exist_ok=True)
        self._restored: Path | None = None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        import ray.tune

        ckpt = ray.tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.tune.report(dict(metrics), checkpoint=ckpt)

    def latest_checkpoint(self) -> Path | None:
        import ray.tune

        ckpt = ray.tune.get_checkpoint()
        if ckpt is None:
            return None
        if self._restored is None:
            self._restored = Path(tempfile.mkdtemp(prefix="restore-", dir=self.out_dir))
            ckpt.to_directory(str(self._restored))
        return self._restored

    def cleanup(self) -> None:
        if self._restored is not None:
            shutil.rmtree(self._restored, ignore_errors=True)


class RecordingContext:
    """Wraps any TrainContext: rank 0 records rows; reports carry the last evaluation forward."""

    def __init__(self, inner: Any, recorder: TrialRecorder | None, phase: str = "gan") -> None:
        self.inner = inner
        self.recorder = recorder
        self.phase = phase
        self.last_eval: dict[str, Any] = {}
        self.diverged = False
        self._resumed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def latest_checkpoint(self) -> Path | None:
        path = self.inner.latest_checkpoint()
        if path is not None and self.recorder is not None and not self._resumed:
            from csrgan.train.checkpoint import load_state

            step = int(load_state(path).get("step", 0))
            self.recorder.resume_from(self.phase, step)
            self._resumed = True
        return path

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        metrics = dict(metrics)
        if metrics.get("diverged"):
            self.diverged = True
        recorded = (
            self.inner.rank == 0 and self.recorder is not None and self.recorder.record(metrics, self.phase)
        )
        if recorded:
            self.last_eval = {k: v for k, v in metrics.items() if "/" in k and not k.startswith("loss/")}
        for k, v in self.last_eval.items():
            metrics.setdefault(k, v)
        self.inner.report(metrics, checkpoint_dir)


def recording_context(ctx: Any, cfg: ExperimentConfig, record: dict[str, Any]) -> RecordingContext:
    """Inside a Ray Train worker of a multi-worker trial: rank 0 records rows like a 1-worker trial."""
    recorder = None
    if ctx.rank == 0:
        store = ResultsStore(record["storage"], record["sweep"])
        recorder = TrialRecorder(
            store,
            record["trial_id"],
            dict(record["static"]),
            devices=record["devices"],
            test_sets=list(record["test_sets"]),
        )
    return RecordingContext(ctx, recorder)


# ------------------------------------------------------------------------------------------ the trial
def run_trial(tune_config: dict[str, Any], runtime: SweepRuntime) -> None:
    """The Tune function trainable."""
    import ray.tune

    base = runtime.base_config()
    spec = spec_from_tune_config(tune_config, base)
    cfg = trial_config(base, spec)
    set_threads(cfg)
    trial_id = ray.tune.get_context().get_trial_id()
    storage_root = Path(runtime.storage_root)

    store = ResultsStore(str(runtime.results_dir.parent), runtime.sweep)
    static = {
        "sweep": runtime.sweep,
        "trial_id": trial_id,
        "seed": spec.seed,
        **flatten_params(_param_view(cfg, runtime.param_names)),
        "config_hash": config_hash(cfg),
        "git_commit": runtime.git_commit,
        "protocol": PROTOCOL.id,
        "weights": "not reported",  # replaced by the trainer's provenance string on its first report
        "cyclegan_key": stage_ref("cyclegan", cfg, storage_root).key if needs_cyclegan(cfg) else None,
        "pretrain_key": stage_ref("pretrain", cfg, storage_root).key if needs_pretrain(cfg) else None,
    }
    test_sets = [t.name for t in cfg.data.test_sets]
    recorder = TrialRecorder(store, trial_id, static, devices=devices_of(cfg), test_sets=test_sets)

    try:
        stages = build_stages(cfg, storage_root)
    except Exception as exc:
        from csrgan.sweep.stages import StageDivergedError

        if isinstance(exc, StageDivergedError):
            recorder.flush(STATUS_DIVERGED)
            ray.tune.report({"diverged": 1, "step": 0, "stage_error": str(exc)})
            return
        recorder.flush("error")
        raise
    _record_stage_rows(recorder, stages)
    reused = ",".join(f"{k}:{'reused' if o.reused else 'built'}" for k, o in stages.items())

    cg_final = stages["cyclegan"].ref.final if "cyclegan" in stages else None
    pre_final = stages["pretrain"].ref.final if "pretrain" in stages else None
    out_dir = runtime.results_dir / "_trials" / trial_id
    status = STATUS_OK
    t_gan = time.time()
    if cfg.sr.gan.iters == 0:  # a pre-training-only sweep: the stage's final evaluation is the result
        final = dict(stages["pretrain"].info.get("metrics", {})) if pre_final else {}
        ray.tune.report({**final, "step": 0, "stages": reused})
    elif cfg.resources.workers == 1:
        inner = TuneTrialContext(out_dir, _device(cfg))
        ctx = RecordingContext(inner, recorder)
        from csrgan.train.srgan import train_sr

        try:
            train_sr(cfg, ctx, phase="gan", init_from=pre_final, cyclegan_g=cg_final)
        except Exception:
            recorder.flush("error")
            raise
        finally:
            inner.cleanup()
        status = STATUS_DIVERGED if ctx.diverged else STATUS_OK
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        from csrgan.train.ray_train import run_stage

        extra = {k: str(v) for k, v in (("init_from", pre_final), ("cyclegan_g", cg_final)) if v is not None}
        result = run_stage(
            "gan",
            cfg,
            storage_path=str(runtime.results_dir / "_train"),
            name=f"train-{trial_id}",  # same name on resume: Ray Train continues from its checkpoint
            extra=extra,
            callbacks=[TuneReportCallback()],
            record={
                "storage": str(runtime.results_dir.parent),
                "sweep": runtime.sweep,
                "trial_id": trial_id,
                "static": static,
                "devices": devices_of(cfg),
                "test_sets": test_sets,
            },
        )
        status = STATUS_DIVERGED if result.diverged else STATUS_OK
        # rank 0 wrote the rows; reload them to set the final status
        recorder = TrialRecorder(store, trial_id, static, devices=devices_of(cfg), test_sets=test_sets)
    recorder.flush(status)
    _write_timing(out_dir, stages, time.time() - t_gan)


def _write_timing(out_dir: Path, stages: dict[str, StageOutcome], gan_s: float) -> None:
    """Seconds this trial spent training (stages it built + its GAN phase): the sweep's overhead report."""
    built = {k: float(o.info.get("wall_s", 0.0)) for k, o in stages.items() if not o.reused}
    reused = [f"{k}-{o.ref.key}" for k, o in stages.items() if o.reused]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "timing.json").write_text(
        json.dumps({"stages_built_s": built, "stages_reused": reused, "gan_s": round(gan_s, 3)})
    )


def _param_view(cfg: ExperimentConfig, names: tuple[str, ...]) -> dict[str, Any]:
    """The searched parameters plus the headline knobs, as a nested dict for ``flatten_params``."""
    from csrgan.config import get_dotted

    keys = dict.fromkeys(
        [
            *names,
            "sr.mix_prob",
            "sr.gan.adv_weight",
            "sr.gan.lr",
            "sr.gan.content.weight",
            "sr.gan.content.type",
            "sr.pretrain.iters",
            "sr.gan.iters",
            "cyclegan.iters",
        ]
    )
    nested: dict[str, Any] = {}
    for key in keys:
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = get_dotted(cfg, key)
    return nested


def _record_stage_rows(recorder: TrialRecorder, stages: dict[str, StageOutcome]) -> None:
    """The pre-training stage's final evaluation becomes the trial's ``phase=pretrain`` rows."""
    pre = stages.get("pretrain")
    if pre is None:
        return
    metrics = dict(pre.info.get("metrics", {}))
    metrics.setdefault("step", 0)
    recorder.record(metrics, phase="pretrain")
