"""One Tune trial: make sure its shared stages exist, run its GAN phase, record rows, report to Tune.

1. The trial's config = the sweep's base config + the trial's parameters and seed (validated again).
2. Shared stages (the CycleGAN when p > 0, the SRResNet pre-training) are fetched from
   ``<storage>/_stages`` or built there under a lock (:mod:`csrgan.sweep.stages`).
3. The GAN phase runs through the launcher's :class:`csrgan.train.launch.TuneTrial` back-end into
   ``<sweep>/_trials/<id>/``: 1 worker in this trial process (no Train controller or worker group, which
   saves their ~25-30 s fixed cost per trial, see docs/sweeps.md), N workers as a Ray Train group.
   The sweep watches it through a reporter (:class:`csrgan.sweep.recorder.TrialRows`) that writes the
   Parquet rows and carries the last evaluation forward, so ASHA/Optuna always see the metric.
4. The trial's rows get their final status; ``timing.json`` says what it trained and reused.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from csrgan.cluster.where import node_columns
from csrgan.config import ExperimentConfig, config_hash, get_dotted, validate_config
from csrgan.metrics import PROTOCOL
from csrgan.results import flatten_params
from csrgan.storage import SweepLayout
from csrgan.storage.remote import FolderSync
from csrgan.sweep.recorder import RunFiles, TrialRecorder, TrialRows
from csrgan.sweep.space import TrialSpec, trial_config
from csrgan.sweep.stages import (
    StageDivergedError,
    StageOutcome,
    build_shared_stages,
    shared_stages,
    stage_ref,
)
from csrgan.train.degradation import PoorStageError
from csrgan.train.keys import lr_source_key
from csrgan.train.launch import TuneTrial, launch

STATUS_OK, STATUS_DIVERGED = "finished", "diverged"

#: Parameters recorded in every row even when they are not searched: the headline knobs.
HEADLINE_PARAMS = (
    "sr.lr_source",
    "sr.mix_prob",
    "sr.gan.adv_weight",
    "sr.gan.lr",
    "sr.gan.content.weight",
    "sr.gan.content.type",
    "sr.pretrain.iters",
    "sr.gan.iters",
    "cyclegan.iters",
)


@dataclass(frozen=True)
class SweepRuntime:
    """What every trial needs from the driver (pickled once into Ray's object store)."""

    base: dict[str, Any]  # the resolved ExperimentConfig as JSON
    layout: SweepLayout
    git_commit: str | None
    param_names: tuple[str, ...]
    #: MATLAB-bicubic metrics per test set (``{"<set>/psnr": ...}``), written into every row
    baseline: dict[str, float] = field(default_factory=dict)

    def base_config(self) -> ExperimentConfig:
        return validate_config(self.base, source=f"sweep {self.layout.sweep}")


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


def _param_view(cfg: ExperimentConfig, names: tuple[str, ...]) -> dict[str, Any]:
    """The searched parameters plus the headline knobs, as a nested dict for ``flatten_params``."""
    nested: dict[str, Any] = {}
    for key in dict.fromkeys([*names, *HEADLINE_PARAMS]):
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = get_dotted(cfg, key)
    return nested


def _rows(cfg: ExperimentConfig, spec: TrialSpec, runtime: SweepRuntime, trial_id: str) -> TrialRows:
    """What every row of this trial carries besides its step, test set and metrics."""
    layout, needed = runtime.layout, shared_stages(cfg)
    static = {
        "sweep": layout.sweep,
        "trial_id": trial_id,
        "seed": spec.seed,
        **flatten_params(_param_view(cfg, runtime.param_names)),
        "config_hash": config_hash(cfg),
        "git_commit": runtime.git_commit,
        "protocol": PROTOCOL.id,
        "weights": "not reported",  # replaced by the trainer's provenance string on its first report
        **node_columns(),  # the node this trial (its driver, for a worker group) runs on
        **{
            f"{s}_key": stage_ref(s, cfg, layout).key if s in needed else None
            for s in ("cyclegan", "pretrain")
        },
        "lr_source_id": _lr_source_id(cfg),
        **dict.fromkeys(DEGRADATION_COLUMNS),
    }
    return TrialRows(
        layout,
        trial_id,
        static,
        devices_of(cfg),
        tuple(t.name for t in cfg.data.test_sets),
        files=_run_files(cfg, layout, trial_id, needed),
        baseline=dict(runtime.baseline),
    )


def _run_files(
    cfg: ExperimentConfig, layout: SweepLayout, trial_id: str, needed: tuple[str, ...]
) -> dict[str, RunFiles]:
    """Per phase, the run folder its rows lead to: the trial's own GAN phase, the shared pre-training."""
    sr, root = cfg.sr, layout.root
    files = {"gan": RunFiles(root, layout.trial_dir(trial_id), "gan", sr.gan.iters, sr.checkpoint_every)}
    if "pretrain" in needed:
        stage_dir = stage_ref("pretrain", cfg, layout).dir
        files["pretrain"] = RunFiles(root, stage_dir, "pretrain", sr.pretrain.iters, sr.checkpoint_every)
    return files


#: The degradation stage's quality, in every row of a trial that trains on it (None otherwise).
DEGRADATION_COLUMNS = (
    "degradation_verdict",
    "degradation_accepted_poor",
    "degradation_lowfreq_psnr",
    "degradation_hf_w1_ratio",
)


def _lr_source_id(cfg: ExperimentConfig) -> str | None:
    """What the non-bicubic LR is, in one string: ``cyclegan-<key>``, ``pipeline-<id>``, ``paired``."""
    key = lr_source_key(cfg)
    if key is None:
        return None
    ((kind, value),) = key.items()
    return kind if kind == "paired" else f"{kind}-{value}"


def _degradation_columns(stages: dict[str, StageOutcome]) -> dict[str, Any]:
    q = stages["cyclegan"].info.get("quality", {}) if "cyclegan" in stages else {}
    return {
        "degradation_verdict": q.get("verdict"),
        "degradation_accepted_poor": q.get("accepted_poor"),
        "degradation_lowfreq_psnr": q.get("lowfreq_psnr"),
        "degradation_hf_w1_ratio": q.get("hf_w1_ratio"),
    }


def _record_pretrain_rows(recorder: TrialRecorder, stages: dict[str, StageOutcome]) -> None:
    """The pre-training stage's final evaluation becomes the trial's ``phase=pretrain`` rows."""
    pre = stages.get("pretrain")
    if pre is not None:
        recorder.record({"step": 0, **pre.info.get("metrics", {})}, phase="pretrain")


def _write_timing(out_dir: Path, stages: dict[str, StageOutcome], gan_s: float) -> None:
    """Seconds this trial spent training (stages it built + its GAN phase): the sweep's overhead report."""
    built = {k: float(o.info.get("wall_s", 0.0)) for k, o in stages.items() if not o.reused}
    reused = [f"{k}-{o.ref.key}" for k, o in stages.items() if o.reused]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "timing.json").write_text(
        json.dumps({"stages_built_s": built, "stages_reused": reused, "gan_s": round(gan_s, 3)})
    )


def _gan_phase(cfg: ExperimentConfig, rows: TrialRows, stages: dict[str, StageOutcome], out_dir: Path) -> str:
    """Run the trial's own stage; returns its row status."""
    import ray.tune

    if cfg.sr.gan.iters == 0:  # a pre-training-only sweep: the stage's final evaluation is the result
        final = dict(stages["pretrain"].info.get("metrics", {})) if "pretrain" in stages else {}
        ray.tune.report({**final, "step": 0})
        return STATUS_OK
    inputs = {name: outcome.ref.final for name, outcome in stages.items()}
    result = launch("gan", cfg, out_dir, inputs, TuneTrial(), reporter=rows)
    return STATUS_DIVERGED if result.diverged else STATUS_OK


# ------------------------------------------------------------------------------------------ the trial
def run_trial(tune_config: dict[str, Any], runtime: SweepRuntime) -> None:
    """The Tune function trainable."""
    import ray.tune

    runtime = replace(runtime, layout=runtime.layout.here())  # object storage: this node's mirror
    base = runtime.base_config()
    spec = spec_from_tune_config(tune_config, base)
    cfg = trial_config(base, spec)
    trial_id = ray.tune.get_context().get_trial_id()
    rows = _rows(cfg, spec, runtime, trial_id)
    recorder = rows.recorder()
    try:
        stages = build_shared_stages(cfg, runtime.layout)
    except PoorStageError:
        recorder.flush("error")
        raise
    except StageDivergedError as exc:
        recorder.flush(STATUS_DIVERGED)
        ray.tune.report({"diverged": 1, "step": 0, "stage_error": str(exc)})
        return
    except Exception:
        recorder.flush("error")
        raise
    rows.static.update(_degradation_columns(stages))
    out_dir = runtime.layout.trial_dir(trial_id)
    sync = _trial_sync(runtime.layout, out_dir)
    if sync is not None:
        sync.pull()  # a retry or a resume, maybe on another node: continue from the store's checkpoints
        rows = replace(rows, after_report=sync)
    recorder = rows.recorder()
    _record_pretrain_rows(recorder, stages)
    t_gan = time.time()
    try:
        status = _gan_phase(cfg, rows, stages, out_dir)
    except Exception:
        if sync is not None:  # a retry resumes from what this attempt reached
            with contextlib.suppress(Exception):
                sync()
        rows.recorder().flush("error")
        raise
    _write_timing(out_dir, stages, time.time() - t_gan)
    if sync is not None:
        sync()  # final/, the last checkpoint, timing.json: before the rows say finished
    rows.recorder().flush(status)  # the reporter wrote the rows (here or on rank 0): set their status


def _trial_sync(layout: SweepLayout, out_dir: Path) -> FolderSync | None:
    """Object storage: the trial folder's sync with the store (None for folder storage)."""
    if layout.remote is None:
        return None
    return FolderSync(layout.remote, out_dir, layout.rel(out_dir))
