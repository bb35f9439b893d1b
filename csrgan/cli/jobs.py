"""``csrgan jobs status|logs|stop JOB_ID --address http://HOST:8265``: follow a submitted sweep.

Parsing and printing only; the Jobs API calls live in :mod:`csrgan.cluster.jobs`. Exit codes: 0 ok, 1
error (unknown job, cluster unreachable, token refused) and, for ``status`` / ``logs --follow``, 1 when
the job ended FAILED or STOPPED, so scripts can wait on it. ``csrgan submit`` reuses the ``--address``
option and :func:`follow_until_done` from here (submit depends on jobs, never the reverse).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from csrgan.cli.common import EXIT_ERROR, fail

#: The dashboard address may also come from the environment, like ``ray job submit``.
ADDRESS_ENV = "RAY_API_SERVER_ADDRESS"

AddressOpt = Annotated[
    str,
    typer.Option(
        "--address",
        envvar=ADDRESS_ENV,
        help="the cluster's Jobs API (dashboard) address, e.g. http://HOST:8265",
        show_envvar=True,
    ),
]

app = typer.Typer(
    help="Follow sweeps submitted with `csrgan submit` (Ray Jobs API): status, logs, stop.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

JobIdArg = Annotated[str, typer.Argument(metavar="JOB_ID", help="the id `csrgan submit` printed")]


def _call(fn):  # noqa: ANN001, ANN202 - tiny adapter: library errors -> one line on stderr, exit 1
    from csrgan.cluster import ClusterError

    try:
        return fn()
    except ClusterError as exc:
        fail(str(exc), EXIT_ERROR)


def _ended_badly(status: str) -> bool:
    return status in ("FAILED", "STOPPED")


@app.command()
def status(
    job_id: JobIdArg,
    address: AddressOpt,
    as_json: Annotated[bool, typer.Option("--json", help="print the job details as JSON")] = False,
) -> None:
    """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and message."""
    from csrgan import cluster

    info = _call(lambda: cluster.job_status(address, job_id))
    state = str(info.status)
    if as_json:
        typer.echo(json.dumps(info.model_dump(mode="json"), indent=2))
    else:
        typer.echo(f"{job_id}: {state}")
        if info.message:
            typer.echo(f"  {info.message}")
        typer.echo(f"  entrypoint: {info.entrypoint}")
        meta = info.metadata or {}
        if "csrgan.storage" in meta and "csrgan.sweep" in meta:
            typer.echo(f"  results: {meta['csrgan.storage'].rstrip('/')}/{meta['csrgan.sweep']}")
    if _ended_badly(state):
        raise typer.Exit(EXIT_ERROR)


def follow_until_done(address: str, job_id: str) -> None:
    """Stream the logs until the job ends; exit 1 unless it SUCCEEDED."""
    from csrgan import cluster

    try:
        for chunk in cluster.tail_job_logs(address, job_id):
            typer.echo(chunk, nl=False)
    except cluster.ClusterError as exc:
        fail(str(exc), EXIT_ERROR)
    info = _call(lambda: cluster.job_status(address, job_id))
    state = str(info.status)
    typer.echo(f"\njob {job_id}: {state}" + (f" ({info.message})" if info.message else ""), err=True)
    if state != "SUCCEEDED":
        raise typer.Exit(EXIT_ERROR)


@app.command()
def logs(
    job_id: JobIdArg,
    address: AddressOpt,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep streaming until the job ends")] = False,
) -> None:
    """The job's output so far (the sweep's progress lines, errors)."""
    from csrgan import cluster

    if follow:
        follow_until_done(address, job_id)
        return
    typer.echo(_call(lambda: cluster.job_logs(address, job_id)), nl=False)


@app.command()
def stop(job_id: JobIdArg, address: AddressOpt) -> None:
    """Stop the job. Finished trials keep their results; continue with `csrgan sweep FILE --resume`."""
    from csrgan import cluster

    stopped = _call(lambda: cluster.stop_job(address, job_id))
    if stopped:
        typer.echo(f"{job_id}: stop requested")
    else:
        typer.echo(f"{job_id}: had already ended; nothing to stop")
