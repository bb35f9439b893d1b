"""The experiment file: schema, loading, dotted overrides and the hashes that key stage reuse.

One YAML file describes data, the CycleGAN stage, the SRGAN stage, evaluation, resources and the search.
Every section is a pydantic model with ``extra="forbid"``: a typo is an error that names the field, not a
silently ignored key. YAML is read by :mod:`csrgan.yaml_io` (safe loader, no duplicate keys, bounded);
``--set a.b=c`` overrides are parsed as YAML scalars (never ``eval``) and then validated by the same
schema, so they are typed like the file.

Networks, losses and metrics are named, not enumerated: ``sr.generator: {type: srresnet, channels: 32}``
is checked against :data:`csrgan.registry.SR_GENERATORS` (the name, then every argument against the
constructor's signature), so a new network or loss is one registered class plus YAML (docs/extending.md).

Paper symbols: ``sr.mix_prob`` is the report's *p* (probability that a training LR is the CycleGAN's
real-like G(bicubic LR) instead of the bicubic LR); ``cyclegan.lambda_cycle`` is λ in Zhu et al.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from csrgan import registry as R
from csrgan.storage import StorageError, check_storage
from csrgan.yaml_io import YAMLInputError, excerpt, load_yaml_file, load_yaml_text

Prob = Annotated[float, Field(ge=0.0, le=1.0)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]


class Strict(BaseModel):
    """Base for every section: unknown keys are errors; assignments are validated too.

    ``MOVED`` maps keys of earlier csrgan versions to where they went: an error that says so
    (``SECTION`` is the section's dotted name in those messages).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    SECTION: ClassVar[str] = ""
    MOVED: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        for old, new in cls.MOVED.items():
            if isinstance(data, dict) and old in data:
                raise ValueError(f"`{cls.SECTION}.{old}` is gone: {new}")
        return data


class ComponentSpec(BaseModel):
    """``{type: NAME, **arguments}``: something built through a registry (:mod:`csrgan.registry`).

    ``type`` must be registered; the other keys are the constructor's arguments, checked against its
    signature and type hints and completed with its defaults (so the dumped config, and every key
    hashed from it, names every argument). Arguments are read as attributes (``spec.channels``) or
    all at once with :meth:`kwargs`.
    """

    model_config = ConfigDict(extra="allow")
    registry: ClassVar[R.Registry]
    type: str

    @model_validator(mode="after")
    def _against_registry(self) -> ComponentSpec:
        reserved = set(type(self).model_fields)
        args = {k: v for k, v in (self.model_extra or {}).items() if k not in reserved}
        try:
            self.__pydantic_extra__ = self.registry.validate(self.type, args)
        except R.RegistryError as exc:
            raise ValueError(str(exc)) from None
        return self

    def kwargs(self) -> dict[str, Any]:
        """The constructor's arguments from the config (injected ones are added by the builder)."""
        return dict(self.model_extra or {})


def _registered(reg: R.Registry) -> Any:
    """A ``str`` field whose value must be a name in ``reg`` (an unknown one lists the known names)."""

    def check(value: str) -> str:
        if value not in reg:
            raise ValueError(f"unknown {reg.kind} {value!r}; known: {', '.join(reg.names())}")
        return value

    from pydantic import AfterValidator

    return Annotated[str, AfterValidator(check)]


def _component(name: str, registry: R.Registry, default: str) -> type[ComponentSpec]:
    """A :class:`ComponentSpec` subclass for ``registry`` whose ``type`` defaults to ``default``."""
    namespace = {"__module__": __name__, "__annotations__": {"type": str}, "type": default}
    return type(name, (ComponentSpec,), {**namespace, "registry": registry})


SRGeneratorSpec = _component("SRGeneratorSpec", R.SR_GENERATORS, "srresnet")
SRDiscriminatorSpec = _component("SRDiscriminatorSpec", R.SR_DISCRIMINATORS, "srgan")
DegradationGeneratorSpec = _component("DegradationGeneratorSpec", R.DEGRADATION_GENERATORS, "residual")
DegradationCriticSpec = _component("DegradationCriticSpec", R.DEGRADATION_CRITICS, "dsgan")
ScheduleSpec = _component("ScheduleSpec", R.SCHEDULES, "constant")


class LossSpec(ComponentSpec):
    """A weighted loss term: ``{type: vgg, weight: 1.0, layer: relu5_4}`` (``weight`` is not an argument)."""

    registry = R.LOSSES
    type: str = "vgg"
    weight: NonNegFloat = 1.0


_MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
ModuleName = Annotated[str, Field(pattern=_MODULE_PATTERN)]
LossName = _registered(R.LOSSES)
GANLossName = _registered(R.GAN_LOSSES)
MetricName = _registered(R.METRICS)


# --------------------------------------------------------------------------------------------------- data
class TestSetConfig(Strict):
    """One evaluation set. ``hr`` may be omitted for no-reference sets (then only the LR is used).

    Metric keys are prefixed with ``name`` (``bicubic/psnr``), mmagic-style. A set without ``hr`` gets
    no-reference metrics (NIQE, :mod:`csrgan.noref`) of its SR output: see :meth:`noref_for`.
    """

    #: No-reference metrics of a set without ``hr`` when ``noref_metrics`` is not given.
    DEFAULT_NOREF: ClassVar[tuple[str, ...]] = ("niqe",)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    hr: str | None = None
    lr: str | None = None
    degradation: Literal["bicubic", "real"] = Field(
        default="bicubic",
        description="what made `lr`: 'real' sets (HR + real LR) also score the CycleGAN (report Table 2)",
    )
    max_images: PosInt | None = None
    noref_metrics: list[MetricName] | None = Field(
        default=None,
        description="no-reference metrics of this set's SR output (default: [niqe] without `hr`, else the "
        "no-reference names in eval.metrics); [] scores none",
    )

    @model_validator(mode="after")
    def _needs_images(self) -> TestSetConfig:
        if self.hr is None and self.lr is None:
            raise ValueError("a test set needs `hr` (with optional `lr`) or `lr`")
        full_ref = [m for m in self.noref_metrics or () if R.METRICS.get(m).reference]
        if full_ref:
            raise ValueError(
                f"noref_metrics: {full_ref} compare with the HR; list them in eval.metrics (no-reference "
                f"metrics: {', '.join(m for m in R.METRICS.names() if not R.METRICS.get(m).reference)})"
            )
        return self

    def noref_for(self, eval_metrics: list[str] | tuple[str, ...]) -> list[str]:
        """The no-reference metrics this set is scored with, given ``eval.metrics``: ``noref_metrics``
        when set; otherwise the no-reference names in ``eval_metrics``, plus :attr:`DEFAULT_NOREF` for a
        set without ``hr`` (which has nothing else to report)."""
        if self.noref_metrics is not None:
            return list(dict.fromkeys(self.noref_metrics))
        named = [m for m in eval_metrics if m in R.METRICS and not R.METRICS.get(m).reference]
        return list(dict.fromkeys([*named, *(self.DEFAULT_NOREF if self.hr is None else ())]))


class DemoDataConfig(Strict):
    """Build the offline demo set (images bundled with scikit-image) at ``dir`` if it is not there."""

    dir: str = ".demo-data"
    seed: NonNegInt = 0


class DataConfig(Strict):
    demo: DemoDataConfig | None = Field(
        default=None, description="use the bundled demo set; paths below default to its layout"
    )
    train_hr: str | None = None
    train_lr: str | None = Field(
        default=None,
        description="LR paired with train_hr (real pairs, or the true degradation when known); used by "
        "sr.lr_source: paired. The other LR of SR training is always MATLAB bicubic of train_hr",
    )
    real_lr: str | None = Field(default=None, description="unpaired real-LR domain Y for the CycleGAN")
    scale: Literal[2, 4, 8] = 4
    cache: bool = Field(default=True, description="keep decoded training images in memory")
    test_sets: list[TestSetConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _paths_or_demo(self) -> DataConfig:
        if self.demo is None and self.train_hr is None:
            raise ValueError("set `data.train_hr` (an HR image folder) or `data.demo`")
        names = [t.name for t in self.test_sets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"test set names must be unique; repeated: {dupes}")
        return self


# ----------------------------------------------------------------------------------------------- cyclegan
class FrequencySeparationConfig(Strict):
    """DSGAN's objective (Fritsche, Gu, Timofte 2019; code manuelfritsche/real-world-sr): weights of the
    colour term (L1 of the low-pass parts) and the texture term (GAN on the high-pass parts).

    The published weights are ``color_weight 1``, ``texture_weight 0.005`` (and a perceptual LPIPS
    term 0.01, not available offline, so not implemented), for ~300k iterations. At CPU budgets of a
    few hundred iterations ``0.005`` leaves ``G`` the identity (docs/degradation.md has the table).
    """

    low_pass: Annotated[int, Field(ge=1)] = Field(default=5, description="box-filter side (odd)")
    color_weight: NonNegFloat = 1.0
    texture_weight: NonNegFloat = 0.005

    SECTION = "cyclegan.frequency_separation"

    @field_validator("low_pass")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"low_pass must be odd (a centred box filter), got {v}")
        return v


class GateConfig(Strict):
    """The degradation stage's quality gate (csrgan.fidelity): below it the stage is ``poor``."""

    min_lowfreq_psnr: float = Field(
        default=30.0, description="dB; PSNR of low_pass(G(x)) vs low_pass(x): content and colour kept"
    )
    max_gx_psnr: float = Field(default=45.0, description="dB; PSNR of G(x) vs x above it: G did nothing")
    max_hf_w1_ratio: PosFloat = Field(
        default=1.5,
        description="high-frequency distance to the real LR, G(x) over doing nothing (> it: G moved away)",
    )

    SECTION = "cyclegan.gate"


class CycleGANConfig(Strict):
    """Stage 1: learn a degradation G: X (bicubic LR) -> Y (real LR) from unpaired patches.

    ``learner``: ``frequency_separation`` (DSGAN: one G, colour loss on low-pass, GAN on high-pass) or
    ``cyclegan`` (Zhu et al. 2017, junyanz's code: G, F and the cycle losses). ``generator`` defaults to
    the identity-initialised ``residual`` network; junyanz's setup is ``{type: resnet}`` with
    ``discriminator: {type: patchgan}``. The section keeps its historical name ``cyclegan``.

    ``seed`` is the stage's own seed, separate from the experiment ``seed``: a sweep's ``seeds`` repeat
    SR training over one shared stage (sweep ``cyclegan.seed`` to measure its seed noise).
    """

    seed: NonNegInt = 0
    learner: Literal["frequency_separation", "cyclegan"] = "frequency_separation"
    generator: DegradationGeneratorSpec = Field(
        default_factory=DegradationGeneratorSpec,
        description="G (and F for the cyclegan learner): {type: residual|resnet, ...}",
    )
    discriminator: DegradationCriticSpec = Field(
        default_factory=DegradationCriticSpec, description="the critic(s): {type: dsgan|patchgan, ndf, ...}"
    )
    frequency_separation: FrequencySeparationConfig = FrequencySeparationConfig()
    gate: GateConfig = GateConfig()
    accept_poor: bool = Field(
        default=False,
        description="use a stage the quality gate marked poor anyway (recorded in every result row)",
    )
    cache_variants: PosInt = Field(
        default=4, description="real-like LR samples cached per training image (G with a noise input)"
    )
    iters: PosInt = 20_000
    decay_start: NonNegInt | None = Field(
        default=None, description="iteration where linear LR decay to 0 starts; default iters // 2"
    )
    batch_size: PosInt = 1
    patch_size: PosInt = Field(default=64, description="LR patch side (both domains)")
    lr: PosFloat = 2e-4
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    lambda_cycle: NonNegFloat = Field(default=10.0, description="cyclegan learner: λ of the cycle losses")
    lambda_identity: NonNegFloat = Field(default=0.5, description="× lambda_cycle (junyanz convention)")
    pool_size: NonNegInt = 50
    eval_every: PosInt = 1000
    checkpoint_every: PosInt = 1000

    SECTION = "cyclegan"
    MOVED = {
        "model": "use cyclegan.generator: {type: resnet, ngf, n_blocks} and cyclegan.discriminator: "
        "{type: patchgan, ndf, n_layers} (n_layers_d is now discriminator.n_layers)"
    }

    @model_validator(mode="after")
    def _decay(self) -> CycleGANConfig:
        if self.decay_start is not None and self.decay_start > self.iters:
            raise ValueError(f"decay_start ({self.decay_start}) must be <= iters ({self.iters})")
        return self


# -------------------------------------------------------------------------------------------------- srgan
def _check_schedule(schedule: ComponentSpec, iters: int, section: str) -> None:
    """A multistep milestone at or after ``iters`` never applies: a config error, not a silent no-op."""
    milestones = list(schedule.kwargs().get("milestones") or [])
    if milestones != sorted(set(milestones)):
        raise ValueError(f"{section}.schedule: milestones must be strictly increasing, got {milestones}")
    if milestones and iters and milestones[-1] >= iters:
        raise ValueError(
            f"{section}.schedule: milestones {milestones} must be < iters ({iters}); a later one never "
            "applies"
        )


_SCHEDULE_HELP = (
    "{type: constant | multistep | cosine, ...} (csrgan.train.schedules); multistep: milestones "
    "(iterations), gamma; cosine: eta_min"
)
_MOVED_MILESTONES = (
    "use {section}.schedule: {{type: multistep, milestones: [...], gamma: 0.1}} (schedules are data now)"
)


class PretrainConfig(Strict):
    """Stage A: the generator with a pixel loss (SRResNet; ESRGAN's PSNR-oriented RRDBNet). ``iters: 0``
    skips it."""

    iters: NonNegInt = 100_000
    lr: PosFloat = 1e-4
    loss: LossName = Field(default="mse", description="a name in the loss registry (ESRGAN: l1)")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description=_SCHEDULE_HELP)

    SECTION = "sr.pretrain"

    @model_validator(mode="after")
    def _schedule_fits(self) -> PretrainConfig:
        _check_schedule(self.schedule, self.iters, self.SECTION)
        return self


class GANStageConfig(Strict):
    """Stage B: the GAN phase, SRGAN (Ledig et al. 2017) or ESRGAN (Wang et al. 2018) by configuration.

    ``L_G = content.weight * content + adv_weight * adversarial + pixel_weight * pixel_loss``. SRGAN:
    VGG ``relu5_4`` content, ``adv_weight 1e-3``, ``gan_mode vanilla``, 1e-4 then 1e-5 (``schedule:
    {type: multistep, milestones: [iters/2], gamma: 0.1}``). ESRGAN: VGG ``conv5_4`` (before the
    activation) with an L1 criterion, ``adv_weight 5e-3``, ``pixel_loss l1`` with ``pixel_weight 1e-2``,
    ``gan_mode ragan`` (relativistic average), 1e-4 halved at 50k, 100k, 200k and 300k of 400k
    (experiments/esrgan_mix_prob.yaml).
    """

    iters: NonNegInt = 100_000
    lr: PosFloat = 1e-4
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description=_SCHEDULE_HELP)
    content: LossSpec = Field(
        default_factory=LossSpec,
        description="{type: vgg|mse|l1, weight, **arguments}; vgg: layer (paper: relu5_4), feature_scale "
        "(the SRGAN paper rescaled VGG features by 1/12.75), criterion",
    )
    adv_weight: NonNegFloat = 1e-3
    pixel_weight: NonNegFloat = 0.0
    pixel_loss: LossName = Field(default="mse", description="the pixel term's loss (ESRGAN: l1)")
    gan_mode: GANLossName = Field(
        default="vanilla", description="a name in GAN_LOSSES: vanilla | lsgan | ragan (relativistic average)"
    )

    SECTION = "sr.gan"
    MOVED = {
        "lr_milestones": _MOVED_MILESTONES.format(section="sr.gan"),
        "lr_gamma": _MOVED_MILESTONES.format(section="sr.gan"),
    }

    @model_validator(mode="after")
    def _schedule_fits(self) -> GANStageConfig:
        _check_schedule(self.schedule, self.iters, self.SECTION)
        return self


class EMAConfig(Strict):
    """An exponential moving average of the generator's weights (Real-ESRGAN, traiNNer-redux: 0.999).

    After every optimiser step ``θ_ema <- decay * θ_ema + (1 - decay) * θ`` for each parameter; buffers
    (BatchNorm statistics) are copied. ``θ_ema`` starts as the phase's initial generator. When on, the
    EMA generator is what the phase evaluates and exports as ``final/`` (so the GAN phase starts from the
    pre-training's EMA, and ``csrgan upscale``/``export`` use it); the raw generator stays in the
    checkpoint (``nets["G"]``, the EMA is ``nets["G_ema"]``).
    """

    decay: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.999

    SECTION = "sr.ema"


class JointConfig(Strict):
    """Joint training of the degradation and the SR network (report 6.4; CycleSR-style, Chen et al. 2020).

    With ``enabled``, the SR phases in ``phases`` run the learned degradation ``G`` on the fly instead
    of reading its cached output: each training LR is ``G(bicubic LR)`` with probability ``sr.mix_prob``,
    and ``G`` (initialised from the degradation stage, with its critic) keeps training on its own
    losses, at ``lr``, against the real LR while the SR network trains on its output. ``sr_weight``
    scales the SR loss that flows back into ``G`` (the indirect supervised path): ``0`` lets no SR
    gradient reach ``G``; ``lr: 0`` freezes ``G`` (with ``sr_weight: 0``, today's two-stage CSR-GAN
    computed on the fly). Needs ``sr.lr_source: cyclegan``.
    """

    enabled: bool = False
    phases: list[Literal["pretrain", "gan"]] = Field(
        default_factory=lambda: ["gan"], min_length=1, description="the SR phases that train G jointly"
    )
    sr_weight: NonNegFloat = Field(default=0.1, description="weight of the SR loss in G's loss (0 = none)")
    lr: NonNegFloat = Field(default=1e-4, description="G's (and its critic's) learning rate; 0 = frozen")

    SECTION = "sr.joint"


class SRGANConfig(Strict):
    """Stage 2: SRGAN x``data.scale`` trained on HR paired with real-like LR w.p. ``mix_prob``."""

    generator: SRGeneratorSpec = Field(
        default_factory=SRGeneratorSpec, description="{type: srresnet, channels, n_blocks, ...}"
    )
    discriminator: SRDiscriminatorSpec = Field(
        default_factory=SRDiscriminatorSpec, description="{type: srgan, channels, dense_units}"
    )
    lr_source: Literal["cyclegan", "pipeline", "paired"] = Field(
        default="cyclegan",
        description="where the non-bicubic training LR comes from: the learned degradation (cached "
        "G(bicubic LR)), a synthetic pipeline applied on the fly (sr.pipeline), or data.train_lr",
    )
    pipeline: str | None = Field(
        default=None,
        description="lr_source pipeline: a degradation pipeline YAML; default: csrgan's packaged default",
    )
    mix_prob: Prob = Field(
        default=1.0, description="p: chance a training LR comes from lr_source instead of bicubic; 0 = SRGAN"
    )
    pretrain: PretrainConfig = PretrainConfig()
    gan: GANStageConfig = GANStageConfig()
    ema: EMAConfig | None = Field(
        default=None, description="{decay: 0.999}: evaluate and export an EMA of the generator (null: off)"
    )
    joint: JointConfig = Field(
        default_factory=JointConfig, description="train the degradation G with the SR network"
    )
    batch_size: PosInt = 16
    patch_size: PosInt = Field(default=96, description="HR patch side; must be a multiple of the scale")
    eval_every: PosInt = 1000
    checkpoint_every: PosInt = 1000

    SECTION = "sr"

    @field_validator("pipeline")
    @classmethod
    def _pipeline_loads(cls, v: str | None) -> str | None:
        if v is not None:
            from csrgan.data.degradations import DegradationConfigError, load_pipeline

            try:
                load_pipeline(v)
            except DegradationConfigError as exc:
                raise ValueError(str(exc)) from None
        return v

    def uses_degradation_stage(self) -> bool:
        """True when training reads the learned degradation (the cyclegan stage's cached LR, or its
        generator with ``sr.joint``)."""
        return self.mix_prob > 0 and self.lr_source == "cyclegan"

    def joint_in(self, phase: str) -> bool:
        """True when ``phase`` trains the degradation generator jointly (``sr.joint``)."""
        return self.joint.enabled and phase in self.joint.phases and self.uses_degradation_stage()

    @model_validator(mode="after")
    def _joint_needs_the_stage(self) -> SRGANConfig:
        if self.joint.enabled and not self.uses_degradation_stage():
            raise ValueError(
                f"sr.joint.enabled needs the learned degradation (sr.lr_source: cyclegan, sr.mix_prob > 0); "
                f"got lr_source {self.lr_source!r}, mix_prob {self.mix_prob:g}"
            )
        return self

    MOVED = {
        "model": "use sr.generator: {type: srresnet, channels, n_blocks, global_bicubic_skip} and "
        "sr.discriminator: {type: srgan, channels} (d_channels is now discriminator.channels)"
    }


# ------------------------------------------------------------------------------------------- evaluation
class LPIPSConfig(Strict):
    net: Literal["alex", "vgg"] = "alex"
    source: str | None = Field(default=None, description="path to the backbone weights file")
    random_backbone: bool = Field(
        default=False, description="explicitly use a random backbone (recorded in every result row)"
    )
    optional: bool = Field(
        default=False,
        description="missing weights leave the LPIPS column empty (said once, loudly) instead of failing",
    )


class EvalConfig(Strict):
    metrics: list[MetricName] = Field(
        default_factory=lambda: ["psnr", "ssim", "lpips"], description="names in the metric registry"
    )
    lpips: LPIPSConfig = LPIPSConfig()
    tile: NonNegInt = Field(default=0, description="tile side for large images (0 = whole image)")
    grid_images: NonNegInt = Field(default=2, description="images per LR/SR/HR comparison PNG")


class WeightsConfig(Strict):
    vgg19: str | None = Field(default=None, description="path to vgg19-dcbb9e9d.pth (default: torch cache)")
    random_vgg: bool = Field(default=False, description="explicitly use a random VGG19 (recorded)")


# -------------------------------------------------------------------------------------------- resources
class ResourcesConfig(Strict):
    workers: PosInt = Field(default=1, description="Ray Train workers per trial (DDP)")
    cpus_per_worker: PosFloat = 1.0
    gpus_per_worker: NonNegFloat = 0.0
    max_concurrent_trials: PosInt | None = None
    placement: Literal["pack", "spread"] = Field(
        default="pack",
        description="where a trial's Ray Train workers go (workers > 1): pack: as few nodes as possible "
        "(DDP traffic stays on a node); spread: one per node where possible (a node's loss takes fewer "
        "workers; needs the nodes' network for DDP). Ray's placement strategy PACK / SPREAD, both soft",
    )
    amp: bool | Literal["auto"] = Field(
        default="auto",
        description="bf16 autocast; auto: the faster setting of the worker's device "
        "(csrgan.train.efficiency)",
    )
    channels_last: bool | Literal["auto"] = Field(
        default="auto", description="channels_last memory format; auto: the faster setting of the device"
    )
    compile: bool = Field(default=False, description="torch.compile the generator and discriminator")
    prefetch: bool = Field(
        default=False,
        description="SR phases: build the next batch in a background thread while the step runs (same "
        "batches); off by default: no gain on 2 shared cores (benchmarks/train_phase.py)",
    )
    threads_per_worker: PosInt | None = Field(default=None, description="torch.set_num_threads per worker")

    @field_validator("gpus_per_worker")
    @classmethod
    def _whole_gpus(cls, v: float) -> float:
        # Fractional GPUs with multi-worker DDP make NCCL fail ("Duplicate GPU"): whole GPUs only.
        if v not in (0.0,) and v != int(v):
            raise ValueError("gpus_per_worker must be a whole number (fractional GPUs break NCCL DDP)")
        return v


# ----------------------------------------------------------------------------------------------- search
class ParamSpec(Strict):
    """One searched parameter (W&B-sweep-like). Exactly one of the forms must be given."""

    values: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    log_uniform: tuple[PosFloat, PosFloat] | None = None
    int_uniform: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ParamSpec:
        forms = [
            k for k in ("values", "uniform", "log_uniform", "int_uniform") if getattr(self, k) is not None
        ]
        if len(forms) != 1:
            raise ValueError(
                "give exactly one of values / uniform / log_uniform / int_uniform"
                + (f" (got {forms})" if forms else "")
            )
        rng = getattr(self, forms[0])
        if forms[0] == "values" and not rng:
            raise ValueError("values must not be empty")
        if forms[0] != "values" and not rng[0] < rng[1]:
            raise ValueError(f"{forms[0]} needs [low, high] with low < high, got {list(rng)}")
        return self


class MetricSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_]+$", description="<testset>/<metric>")
    goal: Literal["maximize", "minimize"] = "maximize"

    @field_validator("name")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        metric = v.rsplit("/", 1)[1]
        if metric not in R.METRICS:
            raise ValueError(f"unknown metric {metric!r} in {v!r}; known: {', '.join(R.METRICS.names())}")
        return v


class ASHAConfig(Strict):
    """Asynchronous successive halving on the GAN-phase step (iterations, not reports)."""

    type: Literal["asha"] = "asha"
    grace_period: PosInt | None = Field(default=None, description="iterations; default sr.eval_every")
    reduction_factor: Annotated[float, Field(gt=1.0)] = 3.0
    max_t: PosInt | None = Field(default=None, description="iterations; default sr.gan.iters")


class FIFOConfig(Strict):
    type: Literal["fifo"] = "fifo"


class SearchConfig(Strict):
    """What to run and what to optimise.

    ``metric`` is one ``{name, goal}`` or a list of them (a multi-objective search, e.g. maximise
    ``unknown/psnr`` and ``bicubic/psnr``, or PSNR against LPIPS). A list is kept whole in
    :attr:`objectives`; ``metric`` is then its first entry, the one the live view, the table's gains and
    Tune's "best trial" use. Optuna then samples with a multi-objective sampler (``sampler``) and the
    summary reports the Pareto front. Schedulers do not apply to several objectives: ASHA stops trials
    on one metric, and Optuna cannot prune multi-objective studies, so ``scheduler`` must be ``fifo``.
    """

    method: Literal["grid", "random", "optuna"] = "grid"
    metric: MetricSpec
    objectives: list[MetricSpec] = Field(
        default_factory=list,
        description="set from a list-valued `metric` (multi-objective); empty for one objective",
    )
    sampler: Literal["tpe", "nsga2"] = Field(
        default="tpe", description="optuna: TPE (single or multi-objective) or NSGA-II (multi-objective)"
    )
    parameters: dict[str, ParamSpec] = Field(default_factory=dict)
    seeds: list[NonNegInt] = Field(
        default_factory=lambda: [0], min_length=1, description="each configuration runs once per seed"
    )
    num_samples: PosInt = Field(default=1, description="random/optuna: configurations to try")
    scheduler: FIFOConfig | ASHAConfig = Field(default_factory=FIFOConfig, discriminator="type")
    sampler_seed: NonNegInt = 0
    arms: list[dict[str, Any]] = Field(
        default_factory=list,
        description="grid/random: explicit configurations (dotted config key -> value), each combined "
        "with every grid combination or random sample (an arm's keys override the grid's)",
    )
    reference: dict[str, Any] | None = Field(
        default=None,
        description="the configuration gains are measured against (e.g. {sr.mix_prob: 0.0}); the sweep's "
        "table adds each arm's gain over it",
    )
    oracle: dict[str, Any] | None = Field(
        default=None,
        description="the upper bound (e.g. training on the true degradation); the table adds each arm's "
        "share of the oracle's gain over the reference",
    )

    @model_validator(mode="before")
    @classmethod
    def _metric_list(cls, data: Any) -> Any:
        """``metric: [{name, goal}, ...]`` -> ``objectives`` (the list) and ``metric`` (its first)."""
        if isinstance(data, dict) and isinstance(data.get("metric"), list):
            metrics = data["metric"]
            if not metrics:
                raise ValueError("search.metric: an empty list; give one {name, goal} or several")
            if data.get("objectives") not in (None, [], metrics):
                raise ValueError("search.objectives is set from a list-valued search.metric; give only one")
            data = {**data, "metric": metrics[0], "objectives": metrics}
        return data

    @property
    def targets(self) -> list[MetricSpec]:
        """The objectives: every ``metric`` of a list, else the one ``metric``."""
        return list(self.objectives) or [self.metric]

    @property
    def multi_objective(self) -> bool:
        return len(self.targets) > 1

    @field_validator("arms")
    @classmethod
    def _arms_not_empty(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, arm in enumerate(v):
            if not arm:
                raise ValueError(f"search.arms[{i}] is empty: an arm sets at least one dotted config key")
        return v

    def param_names(self) -> tuple[str, ...]:
        """Every searched key: the ``parameters``, then the arms' keys, in first-seen order."""
        return tuple(dict.fromkeys([*self.parameters, *(k for arm in self.arms for k in arm)]))

    @model_validator(mode="after")
    def _grid_needs_values(self) -> SearchConfig:
        if self.method == "grid":
            bad = [k for k, p in self.parameters.items() if p.values is None]
            if bad:
                raise ValueError(f"method grid needs `values` lists; not for: {bad}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        if self.method == "optuna" and len(self.seeds) != 1:
            raise ValueError(
                "method optuna takes one seed (TPE would model seed noise as signal); "
                "re-run the best configurations over seeds with a grid sweep"
            )
        if self.method == "optuna" and self.arms:
            raise ValueError(
                "method optuna does not take search.arms (TPE proposes each configuration); "
                "list configurations with method grid or random"
            )
        if self.method == "grid" and self.num_samples != 1:
            raise ValueError("num_samples applies to random/optuna; a grid runs every combination × seeds")
        names = [m.name for m in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"search.metric lists a metric twice: {names}")
        if self.objectives and self.objectives[0] != self.metric:
            raise ValueError("search.metric must be the first of search.objectives")
        if self.multi_objective and self.scheduler.type != "fifo":
            raise ValueError(
                f"search.scheduler {self.scheduler.type!r} stops trials on one metric, but search.metric has "
                f"{len(names)} objectives ({', '.join(names)}); Optuna cannot prune multi-objective studies "
                "either: use scheduler: {type: fifo}"
            )
        if self.sampler == "nsga2" and not self.multi_objective:
            raise ValueError("search.sampler nsga2 is a multi-objective sampler; give search.metric a list")
        if self.oracle is not None and self.reference is None:
            raise ValueError(
                "search.oracle needs search.reference (the share of the oracle's gain over what?)"
            )
        for name in ("reference", "oracle"):
            bad = sorted(set(getattr(self, name) or {}) - set(self.param_names()))
            if bad:
                raise ValueError(
                    f"search.{name}: {bad} are not searched keys (parameters or arms): "
                    f"{list(self.param_names())}"
                )
        return self


# ------------------------------------------------------------------------------------------- experiment
class ExperimentConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: NonNegInt = 0
    plugins: list[ModuleName] = Field(
        default_factory=list,
        description="modules imported before validation, to register your own networks/losses "
        "(docs/extending.md)",
    )
    storage: str = Field(default="results", description="results/stages folder (csrgan.storage: URI policy)")
    data: DataConfig
    cyclegan: CycleGANConfig = CycleGANConfig()
    sr: SRGANConfig = SRGANConfig()
    eval: EvalConfig = EvalConfig()
    weights: WeightsConfig = WeightsConfig()
    resources: ResourcesConfig = ResourcesConfig()
    search: SearchConfig | None = None

    @field_validator("storage")
    @classmethod
    def _writable_storage(cls, v: str) -> str:
        try:
            check_storage(v)
        except StorageError as exc:
            raise ValueError(str(exc)) from None
        return v

    def _check_search_metric(self, name: str) -> None:
        """The searched metric ``name`` is computed (in ``eval.metrics``) on a set that has ground truth."""
        test_set, metric = name.rsplit("/", 1)
        if metric not in self.eval.metrics:
            raise ValueError(
                f"search.metric.name {name!r}: {metric!r} is not in eval.metrics {self.eval.metrics}, "
                "so no trial would report it"
            )
        ts = next((t for t in self.data.test_sets if t.name == test_set), None)
        if ts is not None and ts.hr is None:
            raise ValueError(
                f"search.metric.name {name!r}: test set {test_set!r} has no `hr` (no ground truth), and "
                f"{metric} compares with the HR; search on a set with `hr`"
            )

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        sr = self.sr
        if sr.joint.enabled and self.cyclegan.learner != "frequency_separation":
            raise ValueError(
                "sr.joint.enabled is implemented for cyclegan.learner frequency_separation only; "
                f"cyclegan.learner is {self.cyclegan.learner!r}"
            )
        if sr.mix_prob > 0 and sr.lr_source == "paired" and self.data.train_lr is None:
            raise ValueError("sr.lr_source is 'paired' with sr.mix_prob > 0, but data.train_lr is not set")
        if sr.uses_degradation_stage() and self.data.real_lr is None and self.data.demo is None:
            raise ValueError(
                "sr.lr_source is 'cyclegan' with sr.mix_prob > 0: the degradation stage needs data.real_lr "
                "(or data.demo); or use sr.lr_source: pipeline | paired, or sr.mix_prob: 0"
            )
        if sr.pipeline is not None and sr.lr_source != "pipeline":
            raise ValueError(
                f"sr.pipeline is set but sr.lr_source is {sr.lr_source!r} (it is only read by 'pipeline')"
            )
        if self.sr.patch_size % self.data.scale:
            raise ValueError(
                f"sr.patch_size ({self.sr.patch_size}) must be a multiple of data.scale ({self.data.scale})"
            )
        if self.search is not None:
            for key in self.search.parameters:
                _check_path_exists(self, key)
            for i, arm in enumerate(self.search.arms):
                for key in arm:
                    _check_path_exists(self, key, where=f"search.arms[{i}]")
            test_names = {t.name for t in self.data.test_sets} | (
                {"bicubic", "unknown"} if self.data.demo is not None and not self.data.test_sets else set()
            )
            for target in self.search.targets:
                metric_set = target.name.split("/")[0]
                if test_names and metric_set not in test_names:
                    raise ValueError(
                        f"search.metric.name {target.name!r}: no test set {metric_set!r} "
                        f"(have: {sorted(test_names)})"
                    )
                self._check_search_metric(target.name)
        return self


# -------------------------------------------------------------------------------------------- loading
class ConfigError(ValueError):
    """A config problem, already formatted for users: file, field path, what was expected."""


def _check_path_exists(cfg: BaseModel, dotted: str, where: str = "search.parameters") -> None:
    """``dotted`` names a value of ``cfg`` (``where`` is the field that uses it, for the message)."""
    node: Any = cfg
    done: list[str] = []
    for part in dotted.split("."):
        # a ComponentSpec's arguments are its extra keys
        names = [*type(node).model_fields, *(node.model_extra or {})] if isinstance(node, BaseModel) else []
        if part not in names:
            close = [".".join([*done, c]) for c in difflib.get_close_matches(part, names, n=3, cutoff=0.6)]
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"{where}: {dotted!r} is not a config field (no {part!r}){hint}")
        node = getattr(node, part)
        done.append(part)
    if isinstance(node, BaseModel):
        raise ValueError(f"{where}: {dotted!r} is a section, not a value")


_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_override(item: str) -> tuple[str, Any]:
    """``"sr.gan.adv_weight=5e-3"`` -> ``("sr.gan.adv_weight", 0.005)``; the value is a YAML scalar/list."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. sr.mix_prob=0.5")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set {item!r}: bad key {key!r}")
    try:
        value = load_yaml_text(raw, f"--set {item!r}") if raw.strip() else ""
    except YAMLInputError as exc:
        raise ConfigError(f"{exc} (the value must be a YAML scalar or list)") from None
    # YAML 1.1 reads "5e-3" as a string; accept it as the float users mean.
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        value = float(value)
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a plain dict (creating sections as needed). Validation happens afterwards."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, value = parse_override(item)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid experiment config ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {excerpt(got)})"
        hint = _did_you_mean(err["loc"]) if err["type"] == "extra_forbidden" else ""
        lines.append(f"  - {loc}: {msg}{shown}{hint}")
    return "\n".join(lines)


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """``"; did you mean sr.mix_prob?"`` for the unknown key at ``loc`` (``sr.mixprob``), from the
    fields of its section; when nothing is close, the section's keys; ``""`` outside the schema."""
    *section, key = loc
    fields = _fields_at(tuple(section))
    prefix = ".".join(str(p) for p in section if not str(p).startswith("function-"))
    close = difflib.get_close_matches(str(key), fields, n=3, cutoff=0.6)
    if close:
        return f"; did you mean {' or '.join(f'{prefix}.{c}' if prefix else c for c in close)}?"
    return f"; the keys of {prefix or 'the top level'} are: {', '.join(fields)}" if fields else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can be (through ``X | None``, unions and ``Annotated``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _item_type(annotation: Any) -> Any:
    """The element (list, tuple) or value (dict) type of a container annotation, else None."""
    if typing.get_origin(annotation) is Annotated:
        return _item_type(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        items = [t for a in typing.get_args(annotation) if (t := _item_type(a)) is not None]
        return items[0] if items else None
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, tuple, set, frozenset) and args:
        return args[0]
    if typing.get_origin(annotation) is dict and len(args) == 2:
        return args[1]
    return None


def _fields_at(section: tuple[int | str, ...]) -> list[str]:
    """The field names of the experiment-schema section at a pydantic error location (``("sr",
    "gan")``, ``("data", "test_sets", 0)``); ``[]`` where the location leaves the schema."""
    annotation: Any = ExperimentConfig
    for part in section:
        models = _models_in(annotation)
        owner = next((m for m in models if isinstance(part, str) and part in m.model_fields), None)
        if owner is not None:
            annotation = owner.model_fields[str(part)].annotation
        elif any(m.__name__ == part for m in models) or str(part).startswith("function-"):
            annotation = next((m for m in models if m.__name__ == part), annotation)  # a union's tag
        elif (item := _item_type(annotation)) is not None:
            annotation = item  # a list index or a dict key
        else:
            return []
    return [f for m in _models_in(annotation) for f in m.model_fields]


def _import_plugins(raw: dict[str, Any], source: str) -> None:
    """Import the experiment's ``plugins`` (modules that register networks/losses) before validating.

    Only well-formed module names are imported; anything else is left to the schema to report.
    """
    plugins = raw.get("plugins")
    if not isinstance(plugins, list):
        return
    for i, name in enumerate(plugins):
        if not (isinstance(name, str) and re.fullmatch(_MODULE_PATTERN, name)):
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's module, named
            raise ConfigError(
                f"{source}: invalid experiment config (1 problem(s))\n  - plugins.{i}: cannot import "
                f"{name!r} ({type(exc).__name__}: {exc}); it must be importable here and on every worker"
            ) from None


def validate_config(raw: Any, source: str = "<config>") -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    _import_plugins(raw, source)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
    _check_search_values(cfg, source)
    return cfg


def _check_search_values(cfg: ExperimentConfig, source: str) -> None:
    """Every value a search can give (each listed value, each range end) must pass the field's own schema,
    so ``sr.mix_prob: {values: [0, 1.5]}`` fails at load time, not inside a trial. Each arm is applied
    whole (its keys together: some values are only valid with the arm's other keys)."""
    if cfg.search is None:
        return
    base = cfg.model_dump(mode="json", exclude={"search"})
    problems: list[str] = []
    for name, spec in cfg.search.parameters.items():
        for form in ("values", "uniform", "log_uniform", "int_uniform"):
            candidates = getattr(spec, form)
            for i, value in enumerate(candidates or []):
                trial = _set_dotted(copy.deepcopy(base), name, value)
                try:
                    ExperimentConfig.model_validate(trial)
                except ValidationError as exc:
                    msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                    problems.append(f"  - search.parameters.{name}.{form}[{i}]: {msg} (got {excerpt(value)})")
    for i, arm in enumerate(cfg.search.arms):
        trial = copy.deepcopy(base)
        for name, value in arm.items():
            _set_dotted(trial, name, value)
        try:
            ExperimentConfig.model_validate(trial)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
                msg = err["msg"].removeprefix("Value error, ")
                got = f" (got {excerpt(arm[loc])})" if loc in arm else ""
                problems.append(f"  - search.arms[{i}]: {loc + ': ' if loc else ''}{msg}{got}")
    if problems:
        raise ConfigError(
            f"{source}: invalid experiment config ({len(problems)} problem(s))\n" + "\n".join(problems)
        )


def load_raw(path: str | Path) -> dict[str, Any]:
    """The file as a dict (:mod:`csrgan.yaml_io`: bounded, UTF-8, no duplicate keys), else ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        raw = load_yaml_file(path)
    except YAMLInputError as exc:
        raise ConfigError(str(exc)) from None
    if raw is None:
        raise ConfigError(f"{path}: file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override, validate. Raises :class:`ConfigError` with a complete user-facing message."""
    raw = apply_overrides(load_raw(path), overrides or [])
    return validate_config(raw, source=str(path))


def with_params(cfg: ExperimentConfig, params: dict[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted parameters set (a sweep trial's config), validated again."""
    raw = cfg.model_dump(mode="json")
    for key, value in params.items():
        _set_dotted(raw, key, value)
    return validate_config(raw, source=f"{cfg.name} with {params}")


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """``raw[a][b][c] = value`` for ``"a.b.c"`` in a dumped config (the sections exist); returns ``raw``."""
    node = raw
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return raw


def get_dotted(cfg: BaseModel, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


# -------------------------------------------------------------------------------------------- hashing
def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-able object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def config_hash(cfg: ExperimentConfig) -> str:
    return stable_hash(cfg.model_dump(mode="json"))
