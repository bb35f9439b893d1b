"""Sweeps as Ray Jobs: ``csrgan submit`` plans and sends one, ``csrgan jobs`` follows it.

The sweep runs as a Ray Job (Jobs API on the dashboard, ``http://HOST:8265``), with the project as
the job's ``working_dir`` so the cluster runs exactly the submitted code and experiment file, and the
entrypoint ``python -m csrgan.cli.app sweep FILE --address auto``. :func:`plan_submission` validates
the experiment here and refuses storage or data paths that would mean something else on the cluster;
every Jobs API request carries the cluster's token (Ray token authentication, on by default since
2.59).

Nothing here imports torch; Ray is imported lazily.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from csrgan.storage import StorageError, check_storage, is_uri

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

    from csrgan.config import ExperimentConfig


class ClusterError(RuntimeError):
    """A job could not be planned, submitted or followed. The message is user-facing."""


#: Never uploaded with the job (gitignore syntax, relative to the working dir; a leading ``/`` anchors
#: at its root, so ``/data`` skips the project's data folder but not the ``csrgan/data`` package).
DEFAULT_EXCLUDES: tuple[str, ...] = (
    "/.venv",
    "/.git",
    "/results",
    "/.demo-data",
    "/data",
    "/runs",
    "/build",
    "/dist",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
)

#: Where a config from outside the working dir is put in a staged working dir.
STAGED_CONFIG_DIR = "_submit"


def project_root() -> Path:
    """The source checkout csrgan is imported from (the folder with its ``pyproject.toml``).

    Raises :class:`ClusterError` when csrgan is installed as a plain package (no checkout to upload).
    """
    import csrgan

    root = Path(csrgan.__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "csrgan"' not in pyproject.read_text(encoding="utf-8"):
        raise ClusterError(
            f"csrgan is imported from {Path(csrgan.__file__).parent}, which is not a source checkout "
            "(no pyproject.toml for csrgan next to it); pass --working-dir with the project folder to upload"
        )
    return root


@dataclass
class SweepSubmission:
    """Everything a sweep job is submitted with; :func:`plan_submission` builds it, :func:`submit` sends it.

    ``working_dir`` is the local folder uploaded as the job's ``runtime_env.working_dir``: the project
    itself, or (for an experiment file outside it) a staged folder of links to the project's top-level
    entries plus the file under ``_submit/``. ``cleanup`` removes a staged folder after the upload.
    """

    entrypoint: str
    runtime_env: dict[str, Any]
    working_dir: Path
    config_path: str  # the experiment file, relative to the working dir (as the entrypoint names it)
    sweep: str
    storage: str
    submission_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    staged: bool = False

    def cleanup(self) -> None:
        if self.staged:
            shutil.rmtree(self.working_dir, ignore_errors=True)


def _same_on_cluster(path: str) -> bool:
    """An absolute path means the same folder on the cluster; a relative or ``~`` one does not (it
    resolves against the job's working dir or the cluster user's home)."""
    return not path.startswith("~") and Path(path).is_absolute()


def _cluster_storage(cfg: ExperimentConfig, storage: str | None) -> str:
    """The storage the job will use; it must mean the same thing on the cluster as here."""
    root = storage or cfg.storage
    if not is_uri(root) and not _same_on_cluster(root):
        where = (
            "the cluster user's home, not yours"
            if root.startswith("~")
            else "the job's temporary working dir, which is deleted with the job"
        )
        raise ClusterError(
            f"storage {root!r} is a relative path: on the cluster it would resolve inside {where}. "
            "Pass an absolute path on storage every node sees (--storage /mnt/shared/results, or "
            "`storage:` in the experiment file)."
        )
    try:
        check_storage(root)  # the one URI policy (csrgan.storage): folders, s3://, gs://
    except StorageError as exc:
        raise ClusterError(str(exc)) from None
    return root


def _is_excluded(rel: Path, excludes: Sequence[str], working_dir: Path | None = None) -> bool:
    """Whether ``rel`` (or a folder above it) is left out of the upload: by ``excludes`` or by the
    working dir's top-level ``.gitignore``, which Ray also honours.

    Uses the gitignore matcher Ray's own packaging uses (vendored in Ray), so "uploaded" here means
    what Ray will upload (nested ``.gitignore`` files are not read here).
    """
    from ray._private.thirdparty.pathspec import PathSpec

    lines = list(excludes)
    gitignore = working_dir / ".gitignore" if working_dir is not None else None
    if gitignore is not None and gitignore.is_file():
        lines += gitignore.read_text(encoding="utf-8").splitlines()
    spec = PathSpec.from_lines("gitwildmatch", lines)
    return any(spec.match_file(Path(*rel.parts[: i + 1]).as_posix()) for i in range(len(rel.parts)))


def _check_data_paths(cfg: ExperimentConfig, working_dir: Path, excludes: Sequence[str]) -> None:
    """Relative data paths resolve inside the job's working dir on the cluster: they must be uploaded."""
    d = cfg.data
    fields: list[tuple[str, str | None]] = [
        ("data.train_hr", d.train_hr),
        ("data.train_lr", d.train_lr),
        ("data.real_lr", d.real_lr),
    ]
    for i, t in enumerate(d.test_sets):
        fields += [(f"data.test_sets[{i}].hr ({t.name})", t.hr), (f"data.test_sets[{i}].lr ({t.name})", t.lr)]
    problems = []
    if d.demo is not None and not _same_on_cluster(d.demo.dir):
        problems.append(
            f"  - data.demo.dir: {d.demo.dir!r} would be built inside the job's temporary working dir, "
            "which trials on other nodes cannot see; use an absolute path on shared storage "
            "(--set data.demo.dir=/mnt/shared/demo)"
        )
    for name, value in fields:
        if value is None or is_uri(value) or _same_on_cluster(value):
            continue
        rel = Path(os.path.normpath(value))
        if value.startswith("~"):
            why = "names a home directory, which is another one on the cluster"
        elif rel.parts and rel.parts[0] == "..":
            why = "points outside the working dir"
        elif _is_excluded(rel, excludes, working_dir):
            why = "is under a folder that is not uploaded"
        elif not (working_dir / rel).exists():
            why = f"does not exist under the working dir {working_dir}"
        else:
            continue
        problems.append(
            f"  - {name}: {value!r} is relative to the job's working dir on the cluster and {why}; "
            f"use an absolute path every node sees (--set {name.split(' ')[0]}=/mnt/shared/...)"
        )
    if problems:
        raise ClusterError(
            "the experiment's data paths would not exist on the cluster:\n" + "\n".join(problems)
        )


def _stage_working_dir(project: Path, config: Path, excludes: Sequence[str]) -> tuple[Path, str]:
    """A temporary working dir: links to the project's top-level entries + the experiment file copied in.

    Ray follows the links when it zips the folder, so the job gets the same code as the project itself.
    """
    stage = Path(tempfile.mkdtemp(prefix="csrgan-submit-"))
    for entry in sorted(project.iterdir()):
        if entry.name == STAGED_CONFIG_DIR or _is_excluded(Path(entry.name), excludes):
            continue
        (stage / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (stage / STAGED_CONFIG_DIR).mkdir()
    shutil.copy2(config, stage / STAGED_CONFIG_DIR / config.name)
    return stage, f"{STAGED_CONFIG_DIR}/{config.name}"


def plan_submission(
    config: Path,
    sets: Sequence[str] = (),
    *,
    storage: str | None = None,
    working_dir: Path | None = None,
    python: str = "python",
    submission_id: str | None = None,
    resume: bool = False,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    env_vars: Mapping[str, str] | None = None,
) -> SweepSubmission:
    """Validate the experiment here (the schema the cluster uses); build the job's entrypoint, runtime_env.

    Raises :class:`csrgan.config.ConfigError` for an invalid experiment and :class:`ClusterError` for
    a storage or data path that would not mean the same thing on the cluster.
    """
    from csrgan.config import load_config

    config = Path(config)
    cfg = load_config(config, list(sets))
    root = _cluster_storage(cfg, storage)
    wd = Path(working_dir).resolve() if working_dir is not None else project_root()
    if not wd.is_dir():
        raise ClusterError(f"--working-dir {wd}: not a folder")
    _check_data_paths(cfg, wd, excludes)

    cfg_abs = config.resolve()
    staged = False
    try:
        rel = cfg_abs.relative_to(wd)
        if _is_excluded(rel, excludes, wd):
            raise ValueError("excluded")
        config_rel = rel.as_posix()
    except ValueError:  # outside the working dir, or in a folder that is not uploaded
        wd, config_rel = _stage_working_dir(wd, cfg_abs, excludes)
        staged = True

    args = [python, "-m", "csrgan.cli.app", "sweep", config_rel, "--address", "auto"]
    for item in sets:
        args += ["--set", item]
    if storage:
        args += ["--storage", storage]
    if resume:
        args.append("--resume")
    runtime_env: dict[str, Any] = {
        "working_dir": str(wd),
        "excludes": list(excludes),
        "env_vars": {"PYTHONUNBUFFERED": "1", **dict(env_vars or {})},
    }
    return SweepSubmission(
        entrypoint=shlex.join(args),
        runtime_env=runtime_env,
        working_dir=wd,
        config_path=config_rel,
        sweep=cfg.name,
        storage=root,
        submission_id=submission_id,
        metadata={"csrgan.sweep": cfg.name, "csrgan.config": config_rel, "csrgan.storage": root},
        staged=staged,
    )


# --------------------------------------------------------------------------------------------- the API
def _token_from_env() -> tuple[str | None, str]:
    """The cluster token and where it came from, in Ray's own order of precedence."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path_var = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path_var:
        path = Path(path_var).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClusterError(
                f"RAY_AUTH_TOKEN_PATH={path_var}: cannot read the token file ({exc})"
            ) from None
        if not token:
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={path_var}: the token file is empty")
        return token, f"RAY_AUTH_TOKEN_PATH ({path})"
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        token = default.read_text(encoding="utf-8").strip()
        if token:
            return token, str(default)
    return None, ""


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer <token>`` for the Jobs API, unless ``RAY_AUTH_MODE=disabled``.

    The token is looked up like Ray does (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
    ``~/.ray/auth_token``) and sent explicitly, so submission does not depend on this process's Ray
    config. No token and auth not disabled is an error, not an unauthenticated request.
    """
    mode = os.environ.get("RAY_AUTH_MODE", "token").strip().lower()
    if mode == "disabled":
        return {}
    if mode != "token":
        raise ClusterError(f"RAY_AUTH_MODE={mode!r}: expected 'token' (default) or 'disabled'")
    token, _ = _token_from_env()
    if token is None:
        raise ClusterError(
            "no Ray auth token: set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it "
            "in "
            f"{Path.home() / '.ray' / 'auth_token'} (on the head node: `ray get-auth-token`; KubeRay: the "
            "cluster's auth Secret). For a cluster started with RAY_AUTH_MODE=disabled, set "
            "RAY_AUTH_MODE=disabled here too."
        )
    return {"Authorization": f"Bearer {token}"}


def _check_address(address: str) -> str:
    if not address.startswith(("http://", "https://")):
        raise ClusterError(
            f"--address {address!r}: the Jobs API is the dashboard's HTTP address, e.g. http://HOST:8265 "
            "(not the GCS HOST:6379 or ray://HOST:10001 used by `csrgan sweep --address`)"
        )
    return address.rstrip("/")


def _api_errors(address: str, fn: Callable[[], Any]) -> Any:
    """Run one Jobs API call; connection and auth failures become a :class:`ClusterError` naming the
    address."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        return fn()
    except AuthenticationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ClusterError(
            f"the Ray cluster at {address} refused the request ({first}). Use the cluster's token: "
            "RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token (see cluster/README.md, Security)."
        ) from None
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        raise ClusterError(
            f"cannot reach the Ray dashboard at {address} ({exc}). Is the cluster up, and is this machine "
            "on its private network (or tunnelled: `ray dashboard cluster/ray-cluster.yaml`)?"
        ) from None


def job_client(address: str) -> JobSubmissionClient:
    """A ``JobSubmissionClient`` for ``http(s)://HOST:8265`` that sends the cluster token."""
    from ray.job_submission import JobSubmissionClient

    address = _check_address(address)
    headers = auth_headers()
    return _api_errors(address, lambda: JobSubmissionClient(address, headers=headers))


def submit(address: str, plan: SweepSubmission, client_factory: Callable[[str], Any] = job_client) -> str:
    """Submit the planned sweep job; returns its submission id. A staged working dir is removed afterwards."""
    try:
        client = client_factory(address)
        return _api_errors(
            address,
            lambda: client.submit_job(
                entrypoint=plan.entrypoint,
                runtime_env=plan.runtime_env,
                submission_id=plan.submission_id,
                metadata=plan.metadata,
            ),
        )
    except RuntimeError as exc:
        if isinstance(exc, ClusterError):
            raise
        raise ClusterError(f"the Ray cluster at {address} did not accept the job: {exc}") from None
    finally:
        plan.cleanup()


def _job_call(address: str, job_id: str, what: Callable[[Any], Any]) -> Any:
    client = job_client(address)
    try:
        return _api_errors(address, lambda: what(client))
    except RuntimeError as exc:
        if isinstance(exc, ClusterError):
            raise
        if "404" in str(exc) or "does not exist" in str(exc):
            raise ClusterError(f"no job {job_id!r} on the Ray cluster at {address}") from None
        raise ClusterError(f"job {job_id} at {address}: {exc}") from None


def job_status(address: str, job_id: str) -> JobDetails:
    """The job's details (``.status``, ``.message``, ``.entrypoint``, times, metadata)."""
    return _job_call(address, job_id, lambda c: c.get_job_info(job_id))


def job_logs(address: str, job_id: str) -> str:
    return _job_call(address, job_id, lambda c: c.get_job_logs(job_id))


def stop_job(address: str, job_id: str) -> bool:
    """Ask the cluster to stop the job; False when it had already ended."""
    return bool(_job_call(address, job_id, lambda c: c.stop_job(job_id)))


def tail_job_logs(address: str, job_id: str) -> Iterator[str]:
    """Yield the job's log output as it is written, until the job ends."""
    import asyncio

    client = job_client(address)
    job_status(address, job_id)  # a clear error for an unknown id before streaming
    agen = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(agen.aclose())
        loop.close()


TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def wait_for_job(address: str, job_id: str, timeout_s: float, poll_s: float = 2.0) -> JobDetails:
    """Poll until the job ends (SUCCEEDED / FAILED / STOPPED); :class:`ClusterError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = job_status(address, job_id)
        if str(info.status) in TERMINAL:
            return info
        if time.monotonic() >= deadline:
            raise ClusterError(f"job {job_id} is still {info.status} after {timeout_s:g} s")
        time.sleep(poll_s)
