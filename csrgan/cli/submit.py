"""``csrgan submit FILE --address http://HOST:8265``: run a sweep on a Ray cluster as a Ray Job.

Parsing and printing only; planning and the Jobs API calls live in :mod:`csrgan.cluster.jobs`. The job id
is the only thing printed on stdout (``JOB=$(csrgan submit ...)``); hints go to stderr.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from csrgan.cli.common import EXIT_ERROR, fail, user_errors
from csrgan.cli.jobs import AddressOpt, follow_until_done


def submit(
    config: Annotated[Path, typer.Argument(help="experiment YAML, e.g. experiments/mix_prob.yaml")],
    address: AddressOpt,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="dotted override, passed on to `csrgan sweep`")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="results/stages root on storage every node sees (overrides the file's `storage`)"),
    ] = None,
    working_dir: Annotated[
        Path | None,
        typer.Option(help="folder uploaded as the job's working_dir (default: this csrgan checkout)"),
    ] = None,
    python: Annotated[
        str, typer.Option(help="Python interpreter on the cluster that has csrgan's dependencies")
    ] = "python",
    resume: Annotated[
        bool, typer.Option(help="continue an interrupted sweep (`csrgan sweep --resume` on the cluster)")
    ] = False,
    job_id: Annotated[str | None, typer.Option(help="submission id to use (default: Ray picks one)")] = None,
    wait: Annotated[
        bool, typer.Option(help="stream the job's logs until it ends; exit 1 unless it SUCCEEDED")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="validate and print the entrypoint and runtime_env; submit nothing")
    ] = False,
) -> None:
    """Submit a sweep as a Ray Job: the project is uploaded as its working_dir, the entrypoint runs
    `csrgan sweep FILE --address auto` on the cluster. The experiment is validated here first.

    Authentication: the cluster's token is sent from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token (set RAY_AUTH_MODE=disabled for a cluster without token auth).
    """
    from csrgan import cluster

    with user_errors():
        try:
            plan = cluster.plan_submission(
                config,
                set_ or [],
                storage=storage,
                working_dir=working_dir,
                python=python,
                submission_id=job_id,
                resume=resume,
            )
        except cluster.ClusterError as exc:
            fail(str(exc), EXIT_ERROR)
    if dry_run:
        try:
            typer.echo(f"entrypoint: {plan.entrypoint}")
            typer.echo(f"runtime_env: {json.dumps(plan.runtime_env, indent=2)}")
            typer.echo(f"results -> {plan.storage.rstrip('/')}/{plan.sweep}")
        finally:
            plan.cleanup()
        return
    try:
        submission_id = cluster.submit(address, plan)
    except cluster.ClusterError as exc:
        fail(str(exc), EXIT_ERROR)
    typer.echo(submission_id)
    q = shlex.quote(address)
    typer.echo(
        f"submitted sweep {plan.sweep!r}; results -> {plan.storage.rstrip('/')}/{plan.sweep}\n"
        f"  csrgan jobs status {submission_id} --address {q}\n"
        f"  csrgan jobs logs {submission_id} --address {q} --follow\n"
        f"  csrgan jobs stop {submission_id} --address {q}",
        err=True,
    )
    if wait:
        follow_until_done(address, submission_id)
