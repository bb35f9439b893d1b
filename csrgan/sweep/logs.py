"""Where Ray's and Tune's output goes during a sweep, and the lines csrgan sends from trials.

During ``csrgan sweep`` the terminal is csrgan's: its live view, its stage messages and, once each, the
warnings. Everything Ray and Tune say goes to one log file per run (``<sweep>/_logs/sweep-<time>.log``;
folders starting with ``_`` are not part of the Parquet dataset). :func:`capture_ray_output` does it:

* the ``ray`` logger of this process (Tune, Train, Ray core: ``Started a local Ray instance``, the
  token-authentication WARNING, Tune's INFO lines), and Python warnings (``logging.captureWarnings``),
  go to the file instead of stderr. Ray installs its stderr handler when it is imported and only sets
  formatters in ``ray.init``, so swapping the handlers before Ray starts catches ``ray.init``'s own lines;
* every line the workers print (tasks, Tune trials, Train workers, the raylet), which Ray forwards to
  the driver when ``log_to_driver`` is on, is written to the file instead of the terminal
  (:meth:`RayOutput.capture_workers`: Ray's printing handler on its stream dispatcher, a private hook of
  Ray 2.60, is swapped for ours after ``ray.init`` and put back afterwards). Nothing is dropped: a
  trial's traceback is in the file, and csrgan still prints each failed trial's error at the end;
* WARNING records and warning-looking worker lines are also shown on the terminal, once per distinct
  text (numbers ignored), through ``warn``;
* lines starting with :data:`MARK` (csrgan's own messages from trial processes, e.g. a stage being
  built, :func:`stage_message`) are handed to ``on_mark`` — the live view — and logged too.

``csrgan train`` on Ray uses the same routing (``OUT/_logs/train-<time>.log``): rank 0's progress lines
are marked, everything else Ray and the workers print is logged.

Nothing here imports Ray at module level: stage code imports :func:`stage_message` in any process.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "MARK",
    "RayOutput",
    "StageLine",
    "capture_ray_output",
    "parse_stage_line",
    "stage_message",
    "strip_ansi",
]

#: Prefix of the lines csrgan prints in trial processes for the driver's terminal.
MARK = "[csrgan] "
LOGS_DIR = "_logs"
_DISPATCHER_NAME = "csrgan_sweep_log"
_RAY_PRINTER = "ray_print_logs"  # the handler name Ray 2.60 registers in ray.init(log_to_driver=True)

_RECORD_FORMAT = "%(asctime)s\t%(levelname)s %(name)s %(filename)s:%(lineno)s -- %(message)s"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_NUMBERS = re.compile(r"\d+(?:\.\d+)?|0x[0-9a-fA-F]+")
_WARNING_LINE = re.compile(r"\bWARNING\b|\b[A-Z]\w*Warning: |^Warning: ")
_STAGE = re.compile(r"^stage (?P<stage>\S+): (?P<text>.*?)(?: \[trial (?P<trial>[^\]\s]+)\])?$")
_STEP = re.compile(r"^step (?P<step>\d+)/(?P<iters>\d+)(?:, (?P<sps>[0-9.]+) s/step)?")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def stage_message(stage_id: str, text: str, trial: str | None = None) -> str:
    """The line a trial prints about a shared stage: ``[csrgan] stage pretrain-<key>: building [trial T]``.

    ``text`` is free, except that progress reads ``step S/N, X s/step`` (the live view parses it)."""
    return f"{MARK}stage {stage_id}: {text}" + (f" [trial {trial}]" if trial else "")


@dataclass(frozen=True)
class StageLine:
    """A parsed :func:`stage_message`; ``step``/``iters``/``sps`` are set for progress lines."""

    stage: str
    text: str
    trial: str | None = None
    step: int | None = None
    iters: int | None = None
    sps: float | None = None


def parse_stage_line(line: str) -> StageLine | None:
    """The :class:`StageLine` in ``line`` (with or without :data:`MARK`), or None."""
    m = _STAGE.match(strip_ansi(line).strip().removeprefix(MARK.strip()).strip())
    if m is None:
        return None
    p = _STEP.match(m["text"])
    if p is None:
        return StageLine(m["stage"], m["text"], m["trial"])
    sps = float(p["sps"]) if p["sps"] else None
    return StageLine(m["stage"], m["text"], m["trial"], int(p["step"]), int(p["iters"]), sps)


def _canonical(text: str) -> str:
    """What makes two warnings "the same": the text without numbers (pids, times, sizes)."""
    return _NUMBERS.sub("#", text).strip()


class _LogFile:
    """The run's log file; lines come from several threads (the driver, Ray's log thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f: TextIO = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.write(text if text.endswith("\n") else text + "\n")

    def close(self) -> None:
        with self._lock:
            self._f.close()


class _ToFile(logging.Handler):
    def __init__(self, log: _LogFile) -> None:
        super().__init__(logging.DEBUG)
        self.log = log
        self._format = logging.Formatter(_RECORD_FORMAT)  # not self.formatter: ray.init replaces that

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.write(strip_ansi(self._format.format(record)))
        except Exception:  # noqa: BLE001 - logging must never break the sweep
            self.handleError(record)


class _ToTerminal(logging.Handler):
    """WARNING and above: the first line of the message, once per distinct text."""

    def __init__(self, warn: Callable[[str, str], None]) -> None:
        super().__init__(logging.WARNING)
        self.warn = warn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            first = strip_ansi(record.getMessage()).strip().splitlines()
            if first:
                origin = "python" if record.name == "py.warnings" else record.name.split(".")[0]
                self.warn(first[0] if origin != "python" else _python_warning(first), origin)
        except Exception:  # noqa: BLE001
            self.handleError(record)


def _python_warning(lines: list[str]) -> str:
    """``path:line: UserWarning: text`` -> ``UserWarning: text`` (the path is in the log)."""
    m = re.search(r"\b([A-Z]\w*Warning: .*)", lines[0])
    return m.group(1) if m else lines[0]


@dataclass
class RayOutput:
    """What :func:`capture_ray_output` set up; ``on_mark`` may be replaced while it runs."""

    path: Path
    warn: Callable[[str], None]
    on_mark: Callable[[str], None]
    seen: dict[str, int] = field(default_factory=dict)  # canonical warning -> times seen
    _log: _LogFile | None = None
    _saved_printer: list[tuple[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _recent: dict[tuple[Any, str], tuple[str, float]] = field(default_factory=dict)

    @property
    def n_warnings(self) -> int:
        return sum(self.seen.values())

    def warning(self, text: str, origin: str = "ray") -> None:
        """Log-worthy and shown once: the first occurrence of each distinct text reaches the terminal."""
        key = _canonical(text)
        with self._lock:
            self.seen[key] = self.seen.get(key, 0) + 1
            first = self.seen[key] == 1
        if first:
            self.warn(f"warning ({origin}): {text[:300]}")

    def worker_lines(self, data: dict[str, Any]) -> None:
        """Ray's stream-dispatcher handler: one batch of forwarded worker lines."""
        who = data.get("actor_name") or data.get("task_name") or ""
        pid = data.get("pid")
        origin = f"{who} pid={pid}".strip() if pid not in ("raylet", "autoscaler") else str(pid)
        stream = "stderr" if data.get("is_err") else "stdout"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        lines = [strip_ansi(raw).rstrip() for raw in data.get("lines", [])]
        for line in lines:
            if "__ray_tqdm_magic_token__" in line:
                continue
            if self._log is not None:
                self._log.write(f"{stamp}\t({origin}, {stream}) {line}")
            if line.startswith(MARK):
                if not self._echoed(pid, stream, line):
                    self.on_mark(line)
            elif pid == "raylet" or (pid != "autoscaler" and _WARNING_LINE.search(line)):
                self.warning(line.strip(), origin)
        if pid == "autoscaler":  # its status dumps stay in the log; its events (e.g. "cannot be scheduled")
            for event in _autoscaler_events(lines):
                self.warning(event.strip(), origin)

    def _echoed(self, pid: Any, stream: str, line: str, window_s: float = 10.0) -> bool:
        """Whether ``line`` just came from the same process on its other stream: Ray Train V2 workers
        copy what they print to stdout onto stderr as well."""
        now = time.monotonic()
        with self._lock:
            self._recent = {k: v for k, v in self._recent.items() if now - v[1] < window_s}
            seen = self._recent.get((pid, line))
            self._recent[(pid, line)] = (stream, now)
        return seen is not None and seen[0] != stream

    def capture_workers(self) -> None:
        """After ``ray.init``: forwarded worker lines go to the log file, not to the terminal."""
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        with dispatcher._lock:
            self._saved_printer = [(n, h) for n, h in dispatcher.handlers if n == _RAY_PRINTER]
        dispatcher.remove_handler(_RAY_PRINTER)
        dispatcher.add_handler(_DISPATCHER_NAME, self.worker_lines)

    def release_workers(self) -> None:
        with contextlib.suppress(ImportError):
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

            dispatcher.remove_handler(_DISPATCHER_NAME)
            for name, handler in self._saved_printer:
                dispatcher.add_handler(name, handler)
        self._saved_printer = []


def _autoscaler_events(lines: list[str]) -> list[str]:
    """The autoscaler's events among its forwarded lines, as Ray itself picks them for the terminal."""
    try:
        from ray._private.worker import filter_autoscaler_events

        return [e for e in filter_autoscaler_events(lines) if e and not e.startswith("Tip: ")]
    except Exception:  # noqa: BLE001 - a private helper of Ray 2.60: without it, the log has them all
        return []


def log_path(results_dir: Path, kind: str = "sweep") -> Path:
    """``<results_dir>/_logs/<kind>-<YYYYmmdd-HHMMSS>.log`` (a new file per run)."""
    return results_dir / LOGS_DIR / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.log"


@contextlib.contextmanager
def capture_ray_output(
    path: Path, warn: Callable[[str], None], on_mark: Callable[[str], None] | None = None
) -> Iterator[RayOutput]:
    """Ray's and Tune's output of this process into ``path`` while the block runs (module docstring).

    Call :meth:`RayOutput.capture_workers` once Ray is initialised. Everything is put back on exit."""
    import ray  # noqa: F401 - Ray adds its stderr handler on import: it must be there before the swap

    out = RayOutput(path=path, warn=warn, on_mark=on_mark or warn)
    out._log = _LogFile(path)
    handlers = [_ToFile(out._log), _ToTerminal(out.warning)]
    saved = {}
    for name in ("ray", "py.warnings"):
        lg = logging.getLogger(name)
        saved[name] = (lg.handlers[:], lg.propagate, lg.level)
        lg.handlers[:] = handlers
        lg.propagate = False
        lg.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield out
    finally:
        logging.captureWarnings(False)
        out.release_workers()
        for name, (hs, propagate, level) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:] = hs
            lg.propagate, lg.level = propagate, level
        out._log.close()
