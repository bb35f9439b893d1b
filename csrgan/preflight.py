"""Everything about an experiment's *inputs* that can be checked before Ray starts, checked at once.

The schema (:mod:`csrgan.config`) checks the file; this checks the world it points at: the storage
location, the demo folder, every data folder the configured stages read (readable images of usable
size, LR/HR pairs that match in name and size) and the weights every configured loss and metric
needs. All problems are collected, one line each naming the field and the file, and raised together as
a :class:`PreflightError` (a :class:`~csrgan.config.ConfigError`: the CLI exits 2). Nothing is written.

A sweep passes every configuration its trials can take (grid points, arms, the ends of searched
ranges), so a searched ``sr.patch_size`` is checked at its largest value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from csrgan.config import ConfigError, ExperimentConfig, TestSetConfig
from csrgan.data.check import FolderScan, capped, check_min_size, check_pairs, scan_folder
from csrgan.data.demo import demo_layout, unusable_demo_dir
from csrgan.noref import NIQE_BLOCK, NIQE_MIN_BLOCKS, niqe_blocks
from csrgan.storage import Remote, StorageError, is_object_uri, storage_root


class PreflightError(ConfigError):
    """Problems with an experiment's inputs, found before anything started; ``problems`` lists them."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    def __reduce__(self):  # noqa: ANN204 - keep ``problems`` through pickling (Ray)
        return (type(self), (str(self), self.problems))


def stages_of(cfg: ExperimentConfig) -> set[str]:
    """The stages a sweep trial of ``cfg`` runs: SR always, the degradation stage when its LR is read."""
    return {"sr", "cyclegan"} if cfg.sr.uses_degradation_stage() else {"sr"}


def preflight(
    cfgs: Sequence[ExperimentConfig], *, stages: Iterable[str] | None = None, check_data: bool = False
) -> None:
    """Raise :class:`PreflightError` listing every input problem of ``cfgs`` (first = the base config).

    ``stages``: ``{"sr", "cyclegan"}`` or a subset, for every config (``csrgan train``); default: each
    config's :func:`stages_of`. ``check_data``: decode every image (default: only small folders).
    """
    problems = preflight_problems(cfgs, stages=stages, check_data=check_data)
    if problems:
        head = f"{len(problems)} problem(s) with the inputs of experiment {cfgs[0].name!r}; nothing started"
        raise PreflightError("\n  - ".join([head, *problems]), problems)


def preflight_problems(
    cfgs: Sequence[ExperimentConfig], *, stages: Iterable[str] | None = None, check_data: bool = False
) -> list[str]:
    """The problem lines :func:`preflight` raises (empty when every input is usable)."""
    if not cfgs:
        raise ValueError("preflight needs at least one config")
    base = cfgs[0]
    wanted = [set(stages) if stages is not None else stages_of(c) for c in cfgs]
    problems = _storage_problems(base.storage) + _demo_problems(base)
    problems += _DataCheck(base, check_data).run(cfgs, wanted)
    problems += _weights_problems(cfgs, wanted)
    return problems


# ------------------------------------------------------------------------------------------ storage
def _storage_problems(storage: str) -> list[str]:
    if is_object_uri(storage):  # shared by construction; it must take a write from here
        try:
            Remote(storage).check_writable()
        except OSError as exc:
            return [f"storage: {exc}"]
        return []
    try:
        root = storage_root(storage)
    except StorageError as exc:
        return [f"storage: {exc}"]
    for p in (root, *root.parents):
        if p.exists():
            if not p.is_dir():
                return [f"storage: {p} is a file; storage must be a folder (or a path that can become one)"]
            if not os.access(p, os.W_OK | os.X_OK):
                return [f"storage: cannot write in {p} (permission denied)"]
            return []
    return []


def _demo_problems(cfg: ExperimentConfig) -> list[str]:
    demo = cfg.data.demo
    why = None if demo is None else unusable_demo_dir(demo.dir)
    return [] if why is None else [f"data.demo.dir: {why}"]


def _unbuilt_demo_root(cfg: ExperimentConfig) -> Path | None:
    """The demo folder when the demo set is still to be built (its folders are made, not checked)."""
    demo = cfg.data.demo
    if demo is None or demo_layout(demo.dir).manifest.is_file():
        return None
    return Path(demo.dir).resolve()


# --------------------------------------------------------------------------------------------- data
class _DataCheck:
    """Scans each data folder once and checks it against what every config asks of it."""

    def __init__(self, base: ExperimentConfig, check_data: bool) -> None:
        self.base = base
        self.decode: bool | None = True if check_data else None
        self.scans: dict[tuple[str, str], FolderScan] = {}
        self.demo_root = _unbuilt_demo_root(base)

    def scan(self, folder: str, field_name: str) -> FolderScan | None:
        """The scan of ``folder`` (None when it belongs to a demo set still to be built)."""
        if self.demo_root is not None and Path(folder).resolve().is_relative_to(self.demo_root):
            return None
        key = (folder, field_name)
        if key not in self.scans:
            self.scans[key] = scan_folder(folder, field_name, decode=self.decode)
        return self.scans[key]

    def run(self, cfgs: Sequence[ExperimentConfig], wanted: Sequence[set[str]]) -> list[str]:
        d, scale = self.base.data, self.base.data.scale
        needs = [(scale, f"data.scale {scale}")]
        for c, w in zip(cfgs, wanted, strict=True):
            if "sr" in w:
                needs.append((c.sr.patch_size, f"sr.patch_size {c.sr.patch_size}"))
            if "cyclegan" in w:
                p = c.cyclegan.patch_size
                needs.append((p * scale, f"cyclegan.patch_size {p} x data.scale {scale} (degradation stage)"))
        need_hr, why = max(needs, key=lambda n: n[0])
        problems: list[str] = []
        hr = self.scan(d.train_hr, "data.train_hr") if d.train_hr else None
        if hr is not None:
            problems += hr.problems + check_min_size(hr, need_hr, why)
        if any("cyclegan" in w for w in wanted):
            problems += self._real_lr(cfgs, wanted)
        paired = any(
            "sr" in w and c.sr.mix_prob > 0 and c.sr.lr_source == "paired"
            for c, w in zip(cfgs, wanted, strict=True)
        )
        if paired and d.train_lr and hr is not None:
            lr = self.scan(d.train_lr, "data.train_lr")
            if lr is not None:
                problems += lr.problems + check_pairs(hr, lr, scale)
        for ts in d.test_sets:
            problems += self._test_set(ts.name, ts.hr, ts.lr) + self._noref_sizes(ts)
        return problems

    def _real_lr(self, cfgs: Sequence[ExperimentConfig], wanted: Sequence[set[str]]) -> list[str]:
        real = self.base.data.real_lr
        if not real:
            return []  # the schema already said data.real_lr is needed, unless the demo makes it
        scan = self.scan(real, "data.real_lr")
        if scan is None:
            return []
        side = max(c.cyclegan.patch_size for c, w in zip(cfgs, wanted, strict=True) if "cyclegan" in w)
        why = f"cyclegan.patch_size {side}: a patch of the real LR domain"
        return scan.problems + check_min_size(scan, side, why)

    def _test_set(self, name: str, hr_dir: str | None, lr_dir: str | None) -> list[str]:
        scale = self.base.data.scale
        where = f"data.test_sets[{name}]"
        hr = self.scan(hr_dir, f"{where}.hr") if hr_dir else None
        lr = self.scan(lr_dir, f"{where}.lr") if lr_dir else None
        problems: list[str] = []
        if hr is not None:
            # the protocol crops `scale` px off every side of the modcropped image: something must remain
            problems += hr.problems + check_min_size(hr, 3 * scale, f"the metric crop of {scale} px per side")
        if lr is not None:
            problems += lr.problems
        if hr is not None and lr is not None and not hr.problems and not lr.problems:
            problems += check_pairs(hr, lr, scale)
        return problems

    def _noref_sizes(self, ts: TestSetConfig) -> list[str]:
        """NIQE scores whole 96 px blocks of the cropped SR: each image must give at least two."""
        if "niqe" not in ts.noref_for(self.base.eval.metrics):
            return []
        scale = self.base.data.scale
        field_name = f"data.test_sets[{ts.name}].{'hr' if ts.hr else 'lr'}"
        scan = self.scan(ts.hr or ts.lr or "", field_name)
        if scan is None:
            return []
        factor = 1 if ts.hr else scale  # the SR has the modcropped HR's size, or the LR's times scale
        lines = []
        for path, (w, h) in scan.sizes.items():
            sr_w, sr_h = w // scale * scale * factor, h // scale * scale * factor
            n = niqe_blocks(sr_h, sr_w, scale)
            if n < NIQE_MIN_BLOCKS:
                lines.append(
                    f"{field_name}: {path} gives a {sr_w}x{sr_h} SR with {n} whole {NIQE_BLOCK}x{NIQE_BLOCK} "
                    f"NIQE block(s) after the {scale} px crop; NIQE needs {NIQE_MIN_BLOCKS} (remove the "
                    f"image, or set noref_metrics: [] on the set)"
                )
        return capped(lines, f"images too small for NIQE in {scan.folder}")


# ------------------------------------------------------------------------------------------ weights
def _needs_vgg(cfg: ExperimentConfig, stages: set[str]) -> bool:
    if "sr" not in stages or cfg.weights.random_vgg:
        return False
    sr = cfg.sr
    return (sr.gan.iters > 0 and sr.gan.content.type == "vgg") or (
        sr.pretrain.iters > 0 and sr.pretrain.loss == "vgg"
    )


def _weights_problems(cfgs: Sequence[ExperimentConfig], wanted: Sequence[set[str]]) -> list[str]:
    """Missing weights: VGG19 for a ``vgg`` content loss, LPIPS's unless optional or random, NIQE's model
    for a test set scored with niqe."""
    from csrgan.weights import MissingWeightsError, resolve

    needs: dict[tuple[str, str | None], str] = {}
    for c, w in zip(cfgs, wanted, strict=True):
        if _needs_vgg(c, w):
            needs.setdefault(("vgg19", c.weights.vgg19), "weights.vgg19 (sr.gan.content.type: vgg)")
        lp = c.eval.lpips
        if "lpips" in c.eval.metrics and not lp.random_backbone and not lp.optional:
            backbone = "alexnet" if lp.net == "alex" else "vgg16"
            needs.setdefault((backbone, lp.source), "eval.lpips (eval.metrics has lpips)")
        for ts in c.data.test_sets:
            if "niqe" in ts.noref_for(c.eval.metrics):
                needs.setdefault(("niqe", None), f"data.test_sets[{ts.name}] (no-reference metric niqe)")
    problems = []
    for (name, source), field_name in needs.items():
        try:
            resolve(name, source)
        except MissingWeightsError as exc:
            fix = " (or eval.lpips.optional: true to leave LPIPS empty)" if "lpips" in field_name else ""
            fix = " (or noref_metrics: [] on the set to score none)" if name == "niqe" else fix
            problems.append(f"{field_name}: {exc}{fix}")
    return problems
