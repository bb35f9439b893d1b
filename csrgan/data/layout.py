"""Resolve an experiment's data section into absolute folders (building the demo set if asked).

Runs in the driver before anything is dispatched: Ray workers have another working directory, so
trainers only ever see absolute paths.
"""

from __future__ import annotations

from pathlib import Path

from csrgan.config import ExperimentConfig, TestSetConfig

DEMO_TEST_SETS = (("bicubic", "bicubic"), ("unknown", "real"))


def _abs(p: str | None, base: Path) -> str | None:
    if p is None or "://" in p:
        return p
    return str((base / p).expanduser().resolve())


def resolve_data(
    cfg: ExperimentConfig, base: Path | None = None, build_demo: bool = True
) -> ExperimentConfig:
    """A copy of ``cfg`` whose data paths are absolute; with ``data.demo`` the demo layout fills the gaps."""
    base = Path.cwd() if base is None else Path(base)
    d = cfg.data.model_copy(deep=True)
    if d.demo is not None:
        root = Path(_abs(d.demo.dir, base))
        if build_demo:
            from csrgan.data.demo import build_demo as _build

            _build(root, seed=d.demo.seed)
        d.demo = d.demo.model_copy(update={"dir": str(root)})
        d.train_hr = d.train_hr or str(root / "train" / "HR")
        d.real_lr = d.real_lr or str(root / "train" / "LR_real")
        if not d.test_sets:
            d.test_sets = [
                TestSetConfig(
                    name=n,
                    hr=str(root / "test" / n / "HR"),
                    lr=str(root / "test" / n / "LR"),
                    degradation=kind,
                )
                for n, kind in DEMO_TEST_SETS
            ]
    d.train_hr = _abs(d.train_hr, base)
    d.train_lr = _abs(d.train_lr, base)
    d.real_lr = _abs(d.real_lr, base)
    d.test_sets = [t.model_copy(update={"hr": _abs(t.hr, base), "lr": _abs(t.lr, base)}) for t in d.test_sets]
    return cfg.model_copy(update={"data": d})
