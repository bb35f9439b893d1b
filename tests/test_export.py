"""csrgan.export / ``csrgan export``: a trained SR generator as safetensors or ONNX, checked against PyTorch.

The generators are tiny SRResNets (8 channels, 1 block, bicubic skip, so the ONNX graph has conv,
PixelShuffle, PReLU, BatchNorm and a bicubic Resize) with non-default BatchNorm statistics, saved the
way a stage saves them: a ``final/`` folder (``generator.pt`` + ``generator.json`` + ``state.pt``) and
a checkpoint folder (``state.pt`` only) whose state also holds an EMA copy ``nets["G_ema"]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

import csrgan
from csrgan.cli import export as cli_export
from csrgan.export import (
    DEFAULT_ATOL,
    EXPORT_FORMAT,
    FORMATS,
    ExportFailedError,
    ExportInputError,
    check_onnx,
    export_generator,
    load_safetensors_generator,
)
from csrgan.models.artifacts import GeneratorSpec, build_generator, save_generator
from csrgan.registry import SR_GENERATORS

SPEC = GeneratorSpec(
    "sr", "srresnet", {"channels": 8, "n_blocks": 1, "global_bicubic_skip": True}, scale=4,
    meta={"stage": "gan", "key": "k", "step": 7, "seed": 0},
)  # fmt: skip

#: An SR generator whose output is not a function of its input (it adds fresh noise): every check of
#: an export of it must fail, whatever the format. Unique name: registrations are never undone.
NOISY = f"test_noisy_{uuid.uuid4().hex[:8]}"


@SR_GENERATORS.register(NOISY, injected=("in_ch", "scale"))
class NoisyUpsampler(nn.Module):
    def __init__(self, in_ch: int = 3, scale: int = 4) -> None:
        super().__init__()
        self.mix = nn.Conv2d(in_ch, in_ch, 1)
        self.up = nn.Upsample(scale_factor=scale, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.mix(x))
        return y + torch.rand_like(y)


def _generator(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    g = build_generator(SPEC)
    with torch.no_grad():  # non-default BatchNorm running stats, as a trained model has
        g.train()
        g(torch.rand(4, 3, 16, 16))
    return g.eval()


def _state(nets: dict[str, nn.Module], spec: GeneratorSpec = SPEC, step: int = 7) -> dict:
    """A checkpoint state as csrgan.train.loop.TrainLoop writes it (the parts an export reads)."""
    return {
        "format": "csrgan.checkpoint/v2",
        "stage": "gan",
        "key": "k",
        "step": step,
        "nets": {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in nets.items()},
        "export": {"net": "G", "spec": spec.to_json()},
    }


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    return {"G": _generator(0), "G_ema": _generator(1)}


@pytest.fixture(scope="module")
def final_dir(tmp_path_factory: pytest.TempPathFactory, nets: dict[str, nn.Module]) -> Path:
    """A stage's ``final/``: generator.pt + generator.json + state.pt (no EMA entry)."""
    final = save_generator(tmp_path_factory.mktemp("run") / "final", nets["G"], SPEC)
    torch.save(_state({"G": nets["G"]}), final / "state.pt")
    return final


@pytest.fixture(scope="module")
def ema_checkpoint(tmp_path_factory: pytest.TempPathFactory, nets: dict[str, nn.Module]) -> Path:
    """A checkpoint folder whose state holds G and its EMA copy G_ema (different weights)."""
    ckpt = tmp_path_factory.mktemp("run") / "checkpoints" / "step_00000012"
    ckpt.mkdir(parents=True)
    torch.save(_state(nets, step=12), ckpt / "state.pt")
    return ckpt


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory, ema_checkpoint: Path):  # noqa: ANN201
    """One ONNX export (torch.onnx's exporter takes seconds), shared by the ONNX tests."""
    result = export_generator(ema_checkpoint, "onnx", tmp_path_factory.mktemp("onnx") / "g.onnx")
    print(f"ONNX export: max abs difference onnxruntime vs PyTorch = {result.max_abs_diff:.3g}")
    return result


def _run(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def _images(*shapes: tuple[int, int, int, int], seed: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(s, generator=gen) for s in shapes]


# ----------------------------------------------------------------------------------------- safetensors
def test_safetensors_round_trip_is_exact(tmp_path: Path, final_dir: Path, nets: dict[str, nn.Module]) -> None:
    result = export_generator(final_dir, "safetensors", tmp_path / "g.safetensors")

    assert result.path == tmp_path / "g.safetensors" and result.path.is_file()
    assert result.max_abs_diff == 0.0 and not result.used_ema and result.weights_entry == "generator.pt"
    assert not list(tmp_path.glob("*.part"))
    model, spec, meta = load_safetensors_generator(result.path)  # a fresh network built from the metadata
    assert spec == SPEC and model is not nets["G"]
    for x in _images((1, 3, 19, 27), (2, 3, 8, 8)):
        assert np.array_equal(_run(model, x), _run(nets["G"], x))
    assert meta["format"] == EXPORT_FORMAT and meta["csrgan_version"] == csrgan.__version__
    assert (meta["stage"], meta["step"], meta["scale"], meta["weights"]) == ("gan", "7", "4", "raw")
    assert GeneratorSpec.from_json(json.loads(meta["spec"]), "meta") == SPEC


def test_safetensors_holds_exactly_the_state_dict(tmp_path: Path, final_dir: Path, nets) -> None:  # noqa: ANN001
    from safetensors.torch import load_file

    path = export_generator(final_dir, "safetensors", tmp_path / "g.safetensors").path
    tensors = load_file(str(path))
    want = nets["G"].state_dict()
    assert sorted(tensors) == sorted(want)
    assert all(torch.equal(tensors[k], want[k]) for k in want)


def test_default_output_is_beside_the_weights_and_a_folder_takes_the_default_name(
    tmp_path: Path, nets: dict[str, nn.Module]
) -> None:
    final = save_generator(tmp_path / "final", nets["G"], SPEC)  # no state.pt: the spec's meta is used
    result = export_generator(final, "safetensors")
    assert result.path == final / "generator.safetensors"
    assert (result.metadata["stage"], result.metadata["step"]) == ("gan", "7")
    (tmp_path / "out").mkdir()
    assert (
        export_generator(final, "safetensors", tmp_path / "out").path
        == tmp_path / "out/generator.safetensors"
    )


# ------------------------------------------------------------------------------------------------ EMA
def test_ema_weights_are_exported_by_default_and_no_ema_exports_the_raw_ones(
    tmp_path: Path, ema_checkpoint: Path, nets: dict[str, nn.Module]
) -> None:
    ema = export_generator(ema_checkpoint, "safetensors", tmp_path / "ema.safetensors")
    raw = export_generator(ema_checkpoint, "safetensors", tmp_path / "raw.safetensors", ema=False)

    assert (ema.used_ema, ema.weights_entry, ema.metadata["weights"]) == (True, "nets/G_ema", "ema")
    assert (raw.used_ema, raw.weights_entry, raw.metadata["weights"]) == (False, "nets/G", "raw")
    assert ema.metadata["step"] == "12"
    x = _images((1, 3, 12, 10))[0]
    ema_model, raw_model = load_safetensors_generator(ema.path)[0], load_safetensors_generator(raw.path)[0]
    assert np.array_equal(_run(ema_model, x), _run(nets["G_ema"], x))
    assert np.array_equal(_run(raw_model, x), _run(nets["G"], x))
    assert np.abs(_run(ema_model, x) - _run(raw_model, x)).max() > 1e-3  # they are different weights


def test_an_ema_entry_that_does_not_fit_the_spec_is_refused(
    tmp_path: Path, nets: dict[str, nn.Module]
) -> None:
    state = _state({"G": nets["G"]})
    state["nets"]["G_ema"] = {"head.0.weight": torch.zeros(1)}
    (tmp_path / "ckpt").mkdir()
    torch.save(state, tmp_path / "ckpt" / "state.pt")
    with pytest.raises(ExportInputError, match="G_ema"):
        export_generator(tmp_path / "ckpt", "safetensors", tmp_path / "g.safetensors")
    assert not (tmp_path / "g.safetensors").exists()
    assert export_generator(
        tmp_path / "ckpt", "safetensors", tmp_path / "g.safetensors", ema=False
    ).path.is_file()


# ----------------------------------------------------------------------------------------------- ONNX
def test_onnx_matches_pytorch_and_reports_the_difference(onnx_export) -> None:  # noqa: ANN001
    assert onnx_export.path.is_file() and onnx_export.format == "onnx"
    assert 0.0 <= onnx_export.max_abs_diff <= DEFAULT_ATOL
    assert onnx_export.checked_shapes[0] != onnx_export.checked_shapes[1]


def test_onnx_has_named_dynamic_axes_and_metadata(onnx_export) -> None:  # noqa: ANN001
    import onnx

    model = onnx.load(str(onnx_export.path))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("lr", "sr")
    dims = [(d.dim_param, d.dim_value) for d in inp.type.tensor_type.shape.dim]
    assert [bool(p) for p, _ in dims] == [True, False, True, True] and dims[1][1] == 3
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta == onnx_export.metadata
    assert (meta["weights"], meta["stage"], meta["step"], meta["scale"]) == ("ema", "gan", "12", "4")
    assert GeneratorSpec.from_json(json.loads(meta["spec"]), "meta") == SPEC


def test_onnx_runs_at_other_sizes_and_holds_the_ema_weights(onnx_export, nets) -> None:  # noqa: ANN001
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_export.path), providers=["CPUExecutionProvider"])
    for x in _images((1, 3, 20, 20), (3, 3, 13, 29)):  # square, then non-square with another batch
        got = session.run(["sr"], {"lr": x.numpy()})[0]
        assert got.shape == (x.shape[0], 3, 4 * x.shape[2], 4 * x.shape[3])
        assert np.abs(got - _run(nets["G_ema"], x)).max() <= 1e-4
        assert np.abs(got - _run(nets["G"], x)).max() > 1e-3  # the EMA copy, not the raw weights


def test_onnx_check_detects_other_weights(onnx_export, nets) -> None:  # noqa: ANN001
    assert check_onnx(onnx_export.path, nets["G_ema"]) == pytest.approx(onnx_export.max_abs_diff)
    assert check_onnx(onnx_export.path, nets["G"]) > 1e-3


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_failed_check_writes_nothing(tmp_path: Path, fmt: str) -> None:
    spec = GeneratorSpec("sr", NOISY, {}, scale=4)
    final = save_generator(tmp_path / "final", build_generator(spec), spec)
    with pytest.raises(ExportFailedError, match=r"check failed: max abs difference from PyTorch .* > atol"):
        export_generator(final, fmt, tmp_path / f"g.{fmt}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no file, no .part left behind


# ------------------------------------------------------------------------------------------ bad input
def test_bad_library_input_is_an_export_input_error(tmp_path: Path, final_dir: Path) -> None:
    with pytest.raises(ExportInputError, match="nope"):
        export_generator(tmp_path / "nope", "onnx")
    with pytest.raises(ExportInputError, match="unknown export format 'tflite'"):
        export_generator(final_dir, "tflite")
    with pytest.raises(ExportInputError, match="atol"):
        export_generator(final_dir, "onnx", atol=float("nan"))
    with pytest.raises(ExportInputError, match="not a csrgan export"):
        load_safetensors_generator(_plain_safetensors(tmp_path / "plain.safetensors"))


def _plain_safetensors(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))
    return path


# ------------------------------------------------------------------------------------------------ CLI
def _cli() -> typer.Typer:
    """A small app that mounts the command as app.py does (``csrgan export``)."""
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command keeps its name
    app.command()(cli_export.export)
    return app


def invoke(*args: str):  # noqa: ANN201
    return CliRunner().invoke(_cli(), ["export", *args])


def test_cli_exports_and_prints_the_difference(tmp_path: Path, ema_checkpoint: Path) -> None:
    res = invoke(str(ema_checkpoint), "--format", "safetensors", "-o", str(tmp_path / "g.safetensors"))
    assert res.exit_code == 0, res.output
    assert f"(EMA weights, nets/G_ema; stage gan, step 12) to {tmp_path / 'g.safetensors'}" in res.output
    assert "check: max abs difference from PyTorch 0 (atol 0.0001" in res.output
    res = invoke(
        str(ema_checkpoint), "-f", "safetensors", "--no-ema", "-o", str(tmp_path / "raw.safetensors")
    )
    assert res.exit_code == 0, res.output
    assert "(raw weights, nets/G;" in res.output
    assert load_safetensors_generator(tmp_path / "raw.safetensors")[2]["weights"] == "raw"


def test_cli_failed_check_exits_1(tmp_path: Path) -> None:
    spec = GeneratorSpec("sr", NOISY, {}, scale=4)
    final = save_generator(tmp_path / "final", build_generator(spec), spec)
    res = invoke(str(final), "--format", "safetensors", "--atol", "0.01")
    assert res.exit_code == 1
    assert "error: safetensors check failed: max abs difference from PyTorch" in res.output
    assert "> atol 0.01" in res.output and not (final / "generator.safetensors").exists()


def _not_a_generator(tmp_path: Path) -> Path:
    (tmp_path / "ckpt").mkdir()
    torch.save({"step": 3, "nets": {}}, tmp_path / "ckpt" / "state.pt")
    return tmp_path / "ckpt"


def _degradation_generator(tmp_path: Path) -> Path:
    spec = GeneratorSpec("degradation", "resnet", {"ngf": 4, "n_blocks": 1}, scale=4)
    return save_generator(tmp_path / "cyclegan" / "final", build_generator(spec), spec)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no generator at"),
        ("format", "--format: unknown 'tflite'; choose from safetensors, onnx"),
        ("atol", "--atol must be >= 0"),
        ("not_generator", "not a csrgan checkpoint with an exported generator"),
        ("degradation", "holds a degradation generator"),
    ],
)
def test_cli_bad_input_exits_2_with_one_message(
    tmp_path: Path, final_dir: Path, case: str, message: str
) -> None:
    checkpoint, fmt, extra = final_dir, "onnx", []
    if case == "missing":
        checkpoint = tmp_path / "nope"
    elif case == "format":
        fmt = "tflite"
    elif case == "atol":
        extra = ["--atol", "-1"]
    elif case == "not_generator":
        checkpoint = _not_a_generator(tmp_path)
    elif case == "degradation":
        checkpoint = _degradation_generator(tmp_path)
    res = invoke(str(checkpoint), "--format", fmt, *extra)
    assert res.exit_code == 2, res.output
    assert res.output.count("error:") == 1 and message in res.output
    assert "Traceback" not in res.output
    assert not (checkpoint / "generator.onnx").exists()


def test_cli_constants_match_the_library_and_importing_it_is_cheap() -> None:
    assert (cli_export.FORMATS, cli_export.DEFAULT_ATOL) == (FORMATS, DEFAULT_ATOL)
    heavy = ("torch", "onnx", "onnxruntime", "onnxscript", "safetensors")
    code = f"import sys, csrgan.cli.export; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
