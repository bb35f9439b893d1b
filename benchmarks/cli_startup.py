"""CLI start-up: wall time of ``csrgan --help``, ``csrgan sweep --help`` and ``csrgan --version``.

Each command runs in a fresh subprocess, ``--repeats`` times, interleaved (one of each per round) with
two baselines measured in the same run: ``python -c pass`` (the interpreter alone) and
``python -c "import torch"`` (what every CLI module used to pay at import time). Interleaving makes
background load on a shared machine hit every command alike; medians are reported, with the ratios
``command / python`` and ``command / import torch``, and the median CPU time (user + sys) of each,
which waiting for a core on a loaded machine does not inflate.

    python benchmarks/cli_startup.py                     # 7 rounds, ~1 min on 2 shared cores
    python benchmarks/cli_startup.py --root /tmp/old     # the CLI of another checkout (e.g. before)
    python benchmarks/cli_startup.py --json out.json     # all samples too

``--root DIR`` runs the ``csrgan`` package found in DIR (a checkout, e.g. ``git archive HEAD | tar -x
-C DIR``) instead of this one's, to compare before / after in the same conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(root: Path, *args: str) -> list[str]:
    """``csrgan ARGS`` as the console script runs it, with ``csrgan`` imported from ``root``."""
    code = (
        f"import sys; sys.path.insert(0, {str(root)!r}); sys.argv[0] = 'csrgan'; "
        "from csrgan.cli.app import main; main()"
    )
    return [sys.executable, "-c", code, *args]


def commands(root: Path) -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "csrgan --help": _cli(root, "--help"),
        "csrgan sweep --help": _cli(root, "sweep", "--help"),
        "csrgan --version": _cli(root, "--version"),
    }


def _time_once(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds (user + sys), exit code) of one run. CPU time is what the command
    itself costs; on a loaded machine the wall time also holds the wait for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def measure(cmds: dict[str, list[str]], repeats: int, warmup: int) -> tuple[dict, dict, dict[str, int]]:
    """Round-robin: ``warmup`` untimed rounds (page cache, .pyc), then ``repeats`` timed ones.
    Returns wall and CPU samples per command and each command's last non-zero exit code (an older
    checkout may lack ``--version``)."""
    wall: dict[str, list[float]] = {name: [] for name in cmds}
    cpu: dict[str, list[float]] = {name: [] for name in cmds}
    failed: dict[str, int] = {}
    for r in range(warmup + repeats):
        for name, cmd in cmds.items():
            dt, ct, rc = _time_once(cmd)
            if rc != 0:
                failed[name] = rc
            if r >= warmup:
                wall[name].append(dt)
                cpu[name].append(ct)
    return wall, cpu, failed


def report(wall: dict[str, list[float]], cpu: dict[str, list[float]], failed: dict[str, int]) -> list[dict]:
    med = {name: statistics.median(v) for name, v in wall.items()}
    base, torch_s = med["python -c pass"], med["python -c 'import torch'"]
    rows: list[dict[str, float | str]] = []
    head = ("median s", "min s", "max s", "cpu s", "/ python", "/ torch")
    print(f"{'command':<26} " + " ".join(f"{h:>{max(7, len(h))}}" for h in head))
    for name, v in wall.items():
        row = {
            "command": name,
            "median_s": med[name],
            "min_s": min(v),
            "max_s": max(v),
            "median_cpu_s": statistics.median(cpu[name]),
            "ratio_python": med[name] / base,
            "ratio_import_torch": med[name] / torch_s,
        }
        rows.append(row)
        print(
            f"{name:<26} {med[name]:8.3f} {min(v):7.3f} {max(v):7.3f} {row['median_cpu_s']:7.3f} "
            f"{row['ratio_python']:8.2f} {row['ratio_import_torch']:7.2f}"
            + (f"   (exit {failed[name]}: not a valid timing)" if name in failed else "")
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose csrgan to run (default: this)")
    ap.add_argument("--json", type=Path, default=None, help="write medians, ratios and samples here")
    args = ap.parse_args()
    root = args.root.resolve()
    print(f"csrgan from {root}; {args.repeats} rounds (+{args.warmup} warm-up), {os.cpu_count()} CPUs")
    wall, cpu, failed = measure(commands(root), args.repeats, args.warmup)
    rows = report(wall, cpu, failed)
    if args.json is not None:
        out = {"root": str(root), "rows": rows, "wall_samples": wall, "cpu_samples": cpu}
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
