"""The efficiency switches (csrgan.train.efficiency): ``auto`` per device, explicit values win, the values
in effect reach every report, bf16 autocast and torch.compile train on CPU, compiled checkpoints keep
plain keys and resume."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from test_train_srgan import make_images, tiny_config, with_test_set
from torch import nn

from csrgan.config import ResourcesConfig, validate_config
from csrgan.models.artifacts import build_generator, read_generator
from csrgan.train.checkpoint import load_state
from csrgan.train.context import LocalContext, unwrap
from csrgan.train.efficiency import (
    DEFAULTS,
    FALLBACK,
    WORKLOADS,
    Efficiency,
    check_compiler,
    resolve,
    workload_of,
)
from csrgan.train.srgan import SRLoop, generator_spec, train_sr

SETTINGS = ("setting/amp", "setting/channels_last", "setting/compile")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_images(tmp_path_factory.mktemp("effdata"))


def _cfg(dirs: dict[str, Path], iters: int = 2, **resources: Any) -> Any:
    raw = tiny_config(dirs, pretrain={"iters": iters}).model_dump(mode="json")
    raw["resources"].update(resources)
    return validate_config(raw)


# ---------------------------------------------------------------------------------------- resolve()
def test_auto_is_the_measured_default_of_each_device_type_and_workload() -> None:
    auto = ResourcesConfig()
    assert (auto.amp, auto.channels_last, auto.compile) == ("auto", "auto", False)
    # CUDA: bf16 + channels_last (tensor cores, not measured here); CPU: what benchmarks/train_step.py
    # measured on 2 cores: bf16 far slower; channels_last faster for SR steps, slower for stage 1's
    for workload in WORKLOADS:
        assert resolve(auto, "cuda", workload) == Efficiency(amp=True, channels_last=True, compile=False)
        assert resolve(auto, torch.device("cuda", 1), workload) == resolve(auto, "cuda", workload)
        assert resolve(auto, "mps", workload) == Efficiency(FALLBACK.amp, FALLBACK.channels_last, False)
    assert resolve(auto, "cpu") == resolve(auto, "cpu", "sr") == Efficiency(False, True, False)
    assert resolve(auto, "cpu", "degradation") == Efficiency(False, False, False)
    assert (FALLBACK.amp, FALLBACK.channels_last) == (False, False)
    for key, entry in DEFAULTS.items():  # every choice says where it comes from
        assert "benchmarks/train_step.py" in entry.evidence, key
    with pytest.raises(ValueError, match="workload"):
        resolve(auto, "cpu", "joint")  # type: ignore[arg-type]


def test_stages_map_to_their_workload() -> None:
    from csrgan.train.degradation import PHASE
    from csrgan.train.srgan import PHASES

    assert workload_of(PHASE) == "degradation"  # stage 1 (both learners) is named after its section
    assert [workload_of(p) for p in PHASES] == ["sr", "sr"]


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
@pytest.mark.parametrize("workload", ["sr", "degradation"])
@pytest.mark.parametrize(
    ("amp", "channels_last"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_explicit_values_win_everywhere(device: str, workload: Any, amp: bool, channels_last: bool) -> None:
    res = ResourcesConfig(amp=amp, channels_last=channels_last, compile=True)
    assert resolve(res, device, workload) == Efficiency(amp=amp, channels_last=channels_last, compile=True)


def test_unwrap_sees_through_compile_and_ddp_like_wrappers() -> None:
    net = nn.Conv2d(3, 4, 3)

    class Wrapper(nn.Module):  # DDP's shape: the wrapped net is ``.module``
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    compiled = torch.compile(net)  # lazy: nothing compiles until a call
    assert list(compiled.state_dict()) == ["_orig_mod.weight", "_orig_mod.bias"]
    for wrapped in (compiled, Wrapper(net), torch.compile(Wrapper(net)), Wrapper(torch.compile(net))):
        assert unwrap(wrapped) is net
    assert unwrap(net) is net


# ------------------------------------------------------------------------------- values in the rows
def test_every_report_carries_the_resolved_switches_and_eval_time(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    cfg = with_test_set(_cfg(dirs, iters=2), dirs)  # auto / auto / false on this CPU
    raw = cfg.model_dump(mode="json")
    raw["sr"].update(eval_every=2, checkpoint_every=1)  # step 1: a checkpoint only; step 2: both
    ctx = LocalContext(tmp_path / "auto")
    train_sr(validate_config(raw), ctx, "pretrain")
    want = resolve(cfg.resources, "cpu")
    assert len(ctx.reports) == 2
    for r in ctx.reports:
        assert (r["setting/amp"], r["setting/channels_last"], r["setting/compile"]) == (
            want.amp,
            want.channels_last,
            False,
        )
    first, last = ctx.reports
    assert "time/eval_s" not in first and "val/psnr" not in first
    assert 0 < last["time/eval_s"] < 60 and "val/psnr" in last  # the evaluation this report carries
    explicit = LocalContext(tmp_path / "explicit")
    train_sr(_cfg(dirs, amp=False, channels_last=not want.channels_last), explicit, "pretrain")
    (only,) = explicit.reports
    assert [only[k] for k in SETTINGS] == [False, not want.channels_last, False]


def test_bf16_autocast_on_cpu_runs_when_asked(dirs: dict[str, Path], tmp_path: Path) -> None:
    ctx = LocalContext(tmp_path)
    loop = SRLoop(_cfg(dirs, amp=True), ctx, "pretrain")
    assert loop.amp_dtype == torch.bfloat16
    seen: list[torch.dtype] = []
    first_conv = next(m for m in unwrap(loop.nets["G"]).modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    final = loop.run()
    assert final["diverged"] == 0 and final["setting/amp"] is True
    assert seen == [torch.bfloat16, torch.bfloat16]  # both steps' convolutions ran in bf16
    state, _ = read_generator(tmp_path / "final")  # the weights stay float32 (autocast, not .half())
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------ compile
def test_compile_without_a_cxx_compiler_is_a_clear_config_error(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._inductor.config as inductor_config

    # inductor's own patch (a monkeypatch of its config module would delete the key on undo)
    with inductor_config.patch({"cpp.cxx": ("csrgan-test-no-such-cxx",)}):
        with pytest.raises(ValueError, match=r"resources\.compile: .*C\+\+ compiler"):
            check_compiler()
        ctx = LocalContext(tmp_path)
        with pytest.raises(ValueError, match=r"resources\.compile"):
            train_sr(_cfg(dirs, compile=True), ctx, "pretrain")
    assert ctx.reports == []
    check_compiler()  # the real compiler again


def _has_cxx() -> bool:
    try:
        check_compiler()
    except ValueError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on CPU needs a C++ compiler (g++/c++), none found")
def test_compiled_training_saves_plain_keys_and_resumes(dirs: dict[str, Path], tmp_path: Path) -> None:
    raw = _cfg(dirs, iters=2, compile=True).model_dump(mode="json")
    raw["sr"]["checkpoint_every"] = 1
    cfg = validate_config(raw)
    straight = LocalContext(tmp_path / "straight", keep_checkpoints=5)
    final = train_sr(cfg, straight, "pretrain")
    assert final["diverged"] == 0 and final["setting/compile"] is True
    plain_keys = set(build_generator(generator_spec(cfg)).state_dict())
    for step in (1, 2):
        state = load_state(straight.checkpoint_root / f"step_{step:08d}")
        assert set(state["nets"]["G"]) == plain_keys  # no "_orig_mod." (nor "module.") prefixes
    weights, _ = read_generator(tmp_path / "straight" / "final")
    assert set(weights) == plain_keys

    # interrupted after step 1: continue from its checkpoint into a compiled net, step 2 again
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(straight.checkpoint_root / "step_00000001", resumed_dir / "checkpoints" / "step_00000001")
    resumed = LocalContext(resumed_dir)
    again = train_sr(cfg, resumed, "pretrain")
    assert again["step"] == 2 and resumed.reports[0]["resumed_from"] == 1
    assert again["loss/pixel"] == pytest.approx(final["loss/pixel"], rel=1e-5)
    weights2, _ = read_generator(resumed_dir / "final")
    for k, v in weights.items():
        torch.testing.assert_close(weights2[k], v, rtol=1e-5, atol=1e-6)
