"""``csrgan train cyclegan|srgan``: run the training stages of one experiment, locally or on Ray Train.

Parses and checks the options, then calls :mod:`csrgan.train.pipeline`. Everything that can be checked before
training starts (config, option combinations, GPUs, the CycleGAN artefact, Ray resources) exits with
code 2 and one message on stderr; a run that fails later exits 1; a diverged run (non-finite loss)
exits 3 after saying so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from csrgan.cli.common import EXIT_CONFIG, EXIT_ERROR, fail, user_errors

EXIT_DIVERGED = 3

app = typer.Typer(
    help="Train the CycleGAN (stage 1) or the SRResNet/SRGAN (stage 2) of an experiment.",
    no_args_is_help=True,
)

ConfigArg = Annotated[Path, typer.Argument(help="experiment YAML file", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config value, e.g. --set sr.mix_prob=0.5 (repeatable)"),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Ray Train DDP workers (default: resources.workers); 0 = one local process, no Ray",
    ),
]
GpusOpt = Annotated[
    bool | None,
    typer.Option(
        "--gpus/--cpu",
        help="one GPU per worker (local: cuda) / CPU only; default: resources.gpus_per_worker",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="output folder, one sub-folder per stage (default: runs/<name>)"),
]
LocalOpt = Annotated[
    bool | None,
    typer.Option(
        "--local/--ray",
        help="force one local process (no Ray) or Ray Train; default: Ray unless --workers 0",
        show_default=False,
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="RAY_ADDRESS",
        help="join this Ray cluster ('auto', host:port); default: start one on loopback",
    ),
]
NumCpusOpt = Annotated[
    int | None, typer.Option("--num-cpus", min=1, help="CPUs of the embedded Ray cluster (default: all)")
]
CheckDataOpt = Annotated[
    bool, typer.Option("--check-data", help="decode every training/test image first (default: small folders)")
]


def _prepare(
    config: Path,
    sets: list[str] | None,
    workers: int | None,
    gpus: bool | None,
    out: Path | None,
    local: bool | None,
    address: str | None,
    num_cpus: int | None,
    stages: set[str],
    check_data: bool = False,
) -> tuple[Any, Any]:
    """(validated config, :class:`csrgan.train.pipeline.TrainOptions`) or exit 2 with the reason.

    The inputs ``stages`` read are checked here (:mod:`csrgan.preflight`), before any worker starts.
    """
    from csrgan.config import ConfigError, load_config
    from csrgan.data.layout import resolve_data
    from csrgan.preflight import preflight

    try:
        cfg = load_config(config, sets or [])
        preflight([resolve_data(cfg, build_demo=False)], stages=stages, check_data=check_data)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    if local is True:
        if workers is not None and workers > 1:
            fail(f"--local runs one process; --workers {workers} needs Ray (drop --local)", EXIT_CONFIG)
        n = 0
    elif local is False:
        if workers == 0:
            fail("--ray with --workers 0: Ray Train needs at least one worker", EXIT_CONFIG)
        n = workers if workers is not None else cfg.resources.workers
    else:
        n = workers if workers is not None else cfg.resources.workers
    if address is not None and num_cpus is not None:
        fail("--num-cpus sizes an embedded Ray cluster; it cannot be combined with --address", EXIT_CONFIG)
    if n == 0 and (address is not None or num_cpus is not None):
        fail("--address / --num-cpus apply to Ray runs, not to --workers 0 / --local", EXIT_CONFIG)
    if n == 0 and (gpus or (gpus is None and cfg.resources.gpus_per_worker > 0)):
        import torch

        if not torch.cuda.is_available():
            fail("GPUs asked for (--gpus or resources.gpus_per_worker) but CUDA is not available here; "
                 "pass --cpu", EXIT_CONFIG)  # fmt: skip
    if out is None:
        out = Path("runs") / cfg.name  # not <storage>/<name>: that folder is a sweep's Parquet dataset
    where = out.expanduser().resolve()
    return cfg, _shown_options()(out=where, workers=n, gpus=gpus, address=address, num_cpus=num_cpus)


class _Watched:
    """A back-end that shows each stage's progress while ``inner`` runs it: a bar on a terminal, lines
    otherwise (:func:`csrgan.cli.live.train_reporter`: the reporter the CLI hands to the launcher; the
    trainer never knows who watches)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def run(self, job: Any) -> dict[str, Any]:
        from dataclasses import replace

        from csrgan.cli.live import train_reporter
        from csrgan.train.launch import InProcess

        factory, close = train_reporter(job.stage.name, job.cfg, isinstance(self.inner, InProcess))
        try:
            return self.inner.run(replace(job, reporter=factory))
        finally:
            close()


_SHOWN_OPTIONS: list[type] = []


def _shown_options() -> type:
    """:class:`csrgan.train.pipeline.TrainOptions` whose back-end is :class:`_Watched` (made on first use:
    the pipeline imports torch)."""
    if not _SHOWN_OPTIONS:
        from csrgan.train.pipeline import TrainOptions

        class ShownOptions(TrainOptions):
            def backend(self, cfg: Any) -> Any:
                return _Watched(super().backend(cfg))

        _SHOWN_OPTIONS.append(ShownOptions)
    return _SHOWN_OPTIONS[0]


def _summarise(results: list[Any]) -> None:
    """One block per stage on stdout; exit 3 if the last stage diverged."""
    for r in results:
        m = r.metrics
        if r.skipped:
            typer.echo(f"[{r.stage}] skipped (0 iterations configured)")
            continue
        status = "DIVERGED (non-finite loss)" if r.diverged else "done"
        typer.echo(f"[{r.stage}] {status} at step {m.get('step')}  ->  {r.out_dir}")
        if r.final:
            typer.echo(f"  final:       {r.final}")
        if r.checkpoint:
            typer.echo(f"  checkpoint:  {r.checkpoint}")
        typer.echo(f"  metrics log: {r.out_dir / 'metrics.jsonl'}")
        shown = {k: v for k, v in m.items() if "/" in k and isinstance(v, int | float)}
        for k in sorted(shown):
            typer.echo(f"  {k:<28} {shown[k]:.4f}")
    if results and results[-1].diverged:
        typer.echo(
            f"error: the {results[-1].stage} stage diverged (non-finite loss); see its metrics log", err=True
        )
        raise typer.Exit(EXIT_DIVERGED)


def _run(fn: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """Call a stage runner; errors known before training (mismatched folder, Ray resources) exit 2."""
    from csrgan.train.launch import StageMismatchError
    from csrgan.train.ray_train import RayResourceError

    with user_errors():
        try:
            out = _call_with_ray_output_logged(fn, args, kwargs)
        except (StageMismatchError, RayResourceError) as exc:
            fail(str(exc), EXIT_CONFIG)
        except Exception as exc:
            # Ray Train gave up (workers failed more than FailureConfig.max_failures times): one message.
            train_mod = sys.modules.get("ray.train")
            if train_mod is not None and isinstance(exc, train_mod.TrainingFailedError):
                fail(f"training failed: {exc}", EXIT_ERROR)
            raise
    return out if isinstance(out, list) else [out]


def _call_with_ray_output_logged(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)``; on Ray (``args[1]`` is the options), Ray's messages and the workers'
    output go to ``OUT/_logs/train-<time>.log`` (:mod:`csrgan.sweep.logs`), its path said once, and
    only the progress lines of rank 0 (:class:`csrgan.cli.live.TrainLines`) and warnings are shown."""
    opts = args[1]
    if opts.workers == 0:
        return fn(*args, **kwargs)
    from csrgan.sweep.logs import MARK, capture_ray_output, log_path
    from csrgan.train.ray_train import ensure_ray

    path = log_path(opts.out, "train")
    with capture_ray_output(
        path, warn=typer.echo, on_mark=lambda line: typer.echo(line.removeprefix(MARK))
    ) as out:
        typer.echo(f"log: Ray's messages and the workers' output -> {path}")
        ensure_ray(address=opts.address, num_cpus=opts.num_cpus)  # the launcher reuses it
        out.capture_workers()
        return fn(*args, **kwargs)


@app.command("cyclegan")
def cyclegan(
    config: ConfigArg,
    sets: SetOpt = None,
    workers: WorkersOpt = None,
    gpus: GpusOpt = None,
    out: OutOpt = None,
    local: LocalOpt = None,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    check_data: CheckDataOpt = False,
) -> None:
    """Stage 1: learn the degradation G: bicubic LR -> real LR into OUT/cyclegan (resumes if interrupted)."""
    from csrgan.train.degradation import judge_stage
    from csrgan.train.pipeline import train_cyclegan_stage

    cfg, opts = _prepare(config, sets, workers, gpus, out, local, address, num_cpus, {"cyclegan"}, check_data)
    results = _run(train_cyclegan_stage, cfg, opts)
    _summarise(results)
    if results and results[-1].final:
        q = judge_stage(results[-1].final, cfg)
        typer.echo(f"  quality gate: {q['verdict'].upper()}" + "".join(f"\n    - {r}" for r in q["reasons"]))
        if q["verdict"] == "poor":
            typer.echo(
                "  the SR stages refuse this stage unless cyclegan.accept_poor is true (docs/degradation.md)",
                err=True,
            )


@app.command("srgan")
def srgan(
    config: ConfigArg,
    sets: SetOpt = None,
    workers: WorkersOpt = None,
    gpus: GpusOpt = None,
    out: OutOpt = None,
    cyclegan: Annotated[
        Path | None,
        typer.Option(
            "--cyclegan",
            help="the OUT of `csrgan train cyclegan` (or its final/ folder); needed when sr.mix_prob > 0",
        ),
    ] = None,
    phase: Annotated[str, typer.Option("--phase", help="pretrain | gan | both")] = "both",
    init_from: Annotated[
        Path | None,
        typer.Option("--init-from", help="generator that starts the gan phase (default: OUT/pretrain/final)"),
    ] = None,
    local: LocalOpt = None,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    check_data: CheckDataOpt = False,
) -> None:
    """Stage 2: SRResNet pre-training (OUT/pretrain) and/or SRGAN (OUT/gan) (resumes if interrupted)."""
    from csrgan.train.degradation import PoorStageError, judge_stage, require_usable
    from csrgan.train.pipeline import find_artifact, train_srgan_stages

    if phase not in ("pretrain", "gan", "both"):
        fail(f"--phase: {phase!r} is not pretrain, gan or both", EXIT_CONFIG)
    cfg, opts = _prepare(config, sets, workers, gpus, out, local, address, num_cpus, {"sr"}, check_data)
    # Inputs that must exist are checked here, before any worker starts.
    if cfg.sr.uses_degradation_stage():
        if cyclegan is None:
            fail(
                f"sr.mix_prob is {cfg.sr.mix_prob} > 0 with sr.lr_source cyclegan: pass --cyclegan DIR (the "
                "output of `csrgan train cyclegan`), or --set sr.mix_prob=0 for plain SRGAN",
                EXIT_CONFIG,
            )
        try:
            final = find_artifact(cyclegan, "cyclegan")
            require_usable(judge_stage(final, cfg), final)
        except (FileNotFoundError, PoorStageError) as exc:
            fail(str(exc), EXIT_CONFIG)
    elif cyclegan is not None:
        fail(
            f"--cyclegan given, but sr.mix_prob={cfg.sr.mix_prob:g} with sr.lr_source={cfg.sr.lr_source} "
            "never uses it",
            EXIT_CONFIG,
        )
    if phase == "gan" and cfg.sr.pretrain.iters > 0:
        try:
            find_artifact(init_from or opts.out / "pretrain", "pretrain")
        except FileNotFoundError as exc:
            fail(f"--phase gan needs a finished pre-training: {exc}", EXIT_CONFIG)
    _summarise(
        _run(train_srgan_stages, cfg, opts, phase=phase, cyclegan=cyclegan, init_from=init_from)  # type: ignore[arg-type]
    )
