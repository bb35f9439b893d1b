"""``csrgan cluster list|stop``: the Ray nodes on this machine, and stopping exactly those of one temp dir.

``ray stop`` ends every Ray process of the machine (other people's clusters too). ``csrgan cluster stop
--temp-dir DIR`` ends only the processes of the node(s) started with ``ray start --temp-dir=DIR`` (Ray's
default: /tmp/ray). The work is :mod:`csrgan.cluster.local`'s; this module parses and prints. Exit
codes: 0 ok, 1 nothing matched (or a process would not die).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from csrgan.cli.common import EXIT_ERROR, fail

app = typer.Typer(
    help="Ray nodes on this machine: list them with their temp dirs; stop exactly the nodes of one temp "
    "dir (`ray stop` would stop every Ray process here).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.command("list")
def list_nodes(
    as_json: Annotated[bool, typer.Option("--json", help="print the nodes as JSON")] = False,
) -> None:
    """The Ray nodes (raylets) of this user on this machine: role, IP, temp dir, session, GCS address."""
    from dataclasses import asdict

    from csrgan.cluster.local import local_nodes

    nodes = local_nodes()
    if as_json:
        typer.echo(json.dumps([{**asdict(n), "session": n.session} for n in nodes], indent=2))
        return
    if not nodes:
        typer.echo("no Ray node of this user runs on this machine")
        return
    rows = [("ROLE", "IP", "RAYLET PID", "GCS", "TEMP DIR", "SESSION")]
    rows += [
        ("head" if n.head else "worker", n.ip, str(n.pid), n.gcs_address, n.temp_dir, n.session)
        for n in nodes
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    typer.echo(f"stop one cluster's nodes with: csrgan cluster stop --temp-dir {nodes[0].temp_dir}")


@app.command()
def stop(
    temp_dir: Annotated[
        Path,
        typer.Option(
            "--temp-dir",
            help="the --temp-dir the nodes were started with (`ray start --temp-dir=DIR`; Ray's default is "
            "/tmp/ray), or one session folder in it",
        ),
    ],
    grace: Annotated[
        float, typer.Option("--grace", min=0.0, help="seconds between SIGTERM and SIGKILL")
    ] = 5.0,
    force: Annotated[bool, typer.Option("--force", help="SIGKILL at once (no graceful shutdown)")] = False,
) -> None:
    """Stop the Ray node(s) started with this temp dir, and nothing else; says what it stopped."""
    from csrgan.cluster.local import LocalClusterError, local_nodes, stop_nodes

    nodes = [n for n in local_nodes() if _same(n.temp_dir, temp_dir) or _same(n.session_dir, temp_dir)]
    try:
        stopped = stop_nodes(temp_dir, grace_s=grace, hard=force)
    except LocalClusterError as exc:
        fail(str(exc), EXIT_ERROR)
    if not stopped:
        known = sorted({n.temp_dir for n in local_nodes()})
        fail(
            f"no Ray process of this user uses --temp-dir {temp_dir}"
            + (f"; the nodes here use: {', '.join(known)}" if known else "; no Ray node runs here")
            + " (see `csrgan cluster list`)",
            EXIT_ERROR,
        )
    for n in nodes:
        typer.echo(f"stopped {'head' if n.head else 'worker'} node {n.ip} (session {n.session})")
    counts = Counter(p.name for p in stopped)
    typer.echo(
        f"ended {len(stopped)} process(es) of {temp_dir}: "
        + ", ".join(f"{name} x{c}" if c > 1 else name for name, c in sorted(counts.items()))
    )


def _same(a: str, b: Path) -> bool:
    import os

    return os.path.realpath(a) == os.path.realpath(b)
