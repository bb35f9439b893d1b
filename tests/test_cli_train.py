"""``csrgan train`` / ``csrgan upscale`` and the launcher behind them (csrgan.train.launch/pipeline), no Ray.

The commands are mounted on a local typer app here (the real root app is the lead's csrgan/cli/app.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from csrgan.cli import train as train_cli
from csrgan.cli import upscale as upscale_cli
from csrgan.config import validate_config
from csrgan.data.io import read_image, write_image
from csrgan.train.launch import launch
from csrgan.train.pipeline import find_artifact
from csrgan.train.stages import StageError

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(train_cli.app, name="train")
    app.command("upscale")(upscale_cli.upscale)
    return app


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 70 * np.sin(xx / 6.0 + seed)[..., None] * np.cos(yy / 9.0)[..., None] * np.array(
        [1, 0.5, -0.5]
    )
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def tiny_config(root: Path, **sr_over: object) -> Path:
    """A seconds-long experiment on synthetic images: 4 train HR, 2 test HR, 8-channel SRResNet."""
    for i in range(4):
        write_image(root / "train" / f"{i}.png", _image(64, 64, i))
    for i in range(2):
        write_image(root / "test" / f"t{i}.png", _image(48, 40, 10 + i))
    for i in range(3):  # the unpaired "real" LR domain of the degradation stage (unused at p = 0)
        write_image(root / "real" / f"r{i}.png", _image(24, 24, 20 + i))
    raw = {
        "name": "tiny",
        "seed": 0,
        "data": {
            "train_hr": str(root / "train"),
            "real_lr": str(root / "real"),
            "test_sets": [{"name": "synth", "hr": str(root / "test")}],
        },
        "sr": {
            "generator": {"channels": 8, "n_blocks": 1},
            "discriminator": {"channels": 4},
            "mix_prob": 0.0,
            "batch_size": 2,
            "patch_size": 32,
            "pretrain": {"iters": 4, "lr": 1e-3},
            "gan": {"iters": 4, "content": {"type": "mse"}},
            "eval_every": 2,
            "checkpoint_every": 2,
            **sr_over,
        },
        "eval": {"metrics": ["psnr", "ssim"], "grid_images": 1},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------ train srgan
def test_train_srgan_local_writes_checkpoints_metrics_and_final_artefacts(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    out = tmp_path / "out"

    res = runner.invoke(_app(), ["train", "srgan", str(cfg), "--workers", "0", "--out", str(out)])

    assert res.exit_code == 0, res.output
    for stage in ("pretrain", "gan"):
        d = out / stage
        rows = _rows(d / "metrics.jsonl")
        assert [r["step"] for r in rows] == [2, 4]
        assert {r["phase"] for r in rows} == {stage}
        assert all(np.isfinite(r["synth/psnr"]) and r["diverged"] == 0 for r in rows)
        assert (d / "checkpoints" / "step_00000002" / "state.pt").is_file()
        assert {"state.pt", "generator.pt", "generator.json"} <= {p.name for p in (d / "final").iterdir()}
        assert json.loads((d / "run.json").read_text())["stage"] == stage
        assert f"[{stage}] done at step 4" in res.output
    # the GAN phase started from the pre-trained generator
    gan_run = json.loads((out / "gan" / "run.json").read_text())
    assert gan_run["inputs"]["pretrain"] == str((out / "pretrain" / "final").resolve())


def test_bad_set_exits_2_naming_the_field_before_anything_starts(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    out = tmp_path / "out"

    res = runner.invoke(_app(), ["train", "srgan", str(cfg), "--workers", "0", "--out", str(out),
                                 "--set", "sr.gan.adv_wieght=1e-3"])  # fmt: skip

    assert res.exit_code == 2
    assert "sr.gan.adv_wieght" in res.output and str(cfg) in res.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "sr.mix_prob=0.5"], "--cyclegan"),
        (["--set", "sr.mix_prob=0.5", "--cyclegan", "nowhere"], "nowhere"),
        (["--cyclegan", "nowhere"], "sr.mix_prob=0 with sr.lr_source=cyclegan never uses it"),
        (
            ["--set", "sr.mix_prob=1", "--set", "sr.lr_source=pipeline", "--cyclegan", "nowhere"],
            "sr.mix_prob=1 with sr.lr_source=pipeline never uses it",
        ),
        (["--local", "--workers", "2"], "--local"),
        (["--ray", "--workers", "0"], "--ray"),
        (["--ray", "--address", "auto", "--num-cpus", "2"], "--num-cpus"),
        (["--phase", "warmup"], "--phase"),
        (["--phase", "gan"], "finished pre-training"),
        (["--set", "sr.patch_size=30"], "multiple of data.scale"),
    ],
)
def test_inconsistent_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    cfg = tiny_config(tmp_path)
    out = tmp_path / "out"
    base = ["train", "srgan", str(cfg), "--out", str(out)]
    if "--local" not in args and "--ray" not in args:
        base += ["--workers", "0"]

    res = runner.invoke(_app(), base + args)

    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (out / "pretrain").exists()


def test_rerun_with_another_config_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, gan={"iters": 0})
    out = tmp_path / "out"
    first = runner.invoke(_app(), ["train", "srgan", str(cfg), "--workers", "0", "--out", str(out)])
    assert first.exit_code == 0, first.output

    res = runner.invoke(_app(), ["train", "srgan", str(cfg), "--workers", "0", "--out", str(out),
                                 "--set", "sr.pretrain.lr=0.01"])  # fmt: skip

    assert res.exit_code == 2
    assert "different config" in res.output and "run.json" in res.output
    # evaluation settings may change on resume: same stage key
    again = runner.invoke(_app(), ["train", "srgan", str(cfg), "--workers", "0", "--out", str(out),
                                   "--set", "sr.eval_every=1"])  # fmt: skip
    assert again.exit_code == 0, again.output


def test_a_diverging_run_stops_cleanly_with_exit_3_and_no_gan_phase(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    out = tmp_path / "out"

    res = runner.invoke(_app(), ["train", "srgan", str(cfg), "--workers", "0", "--out", str(out),
                                 "--set", "sr.pretrain.lr=1e30"])  # fmt: skip

    assert res.exit_code == 3, res.output
    assert "DIVERGED" in res.output
    assert isinstance(res.exception, SystemExit)  # a clean exit, not a traceback
    last = _rows(out / "pretrain" / "metrics.jsonl")[-1]
    assert last["diverged"] == 1 and last["loss/pixel"] is None  # NaN is written as null
    assert not (out / "pretrain" / "final").exists()
    assert not (out / "gan").exists()


DEGRADATION_LEARNERS = {
    "cyclegan": {
        "learner": "cyclegan",
        "generator": {"type": "resnet", "ngf": 4, "n_blocks": 1},
        "discriminator": {"type": "patchgan", "ndf": 4, "n_layers": 2},
    },
    "frequency_separation": {  # the default learner
        "generator": {"type": "residual", "nf": 4, "n_blocks": 1, "noise_channels": 1},
        "discriminator": {"type": "dsgan", "ndf": 4},
        "cache_variants": 2,
    },
}


@pytest.mark.parametrize("learner", sorted(DEGRADATION_LEARNERS))
def test_cyclegan_then_csrgan_pretraining_locally(tmp_path: Path, learner: str) -> None:
    """Stage 1 writes G and its cached G(bicubic LR); stage 2 with p = 1 (CSR-GAN) finds it through
    --cyclegan OUT. Two iterations learn no degradation, so the stage is accepted as poor on purpose."""
    from csrgan.data.resize import imresize

    cfg_path = tiny_config(tmp_path, gan={"iters": 0})
    # SSIM's 11x11 window needs LR test images of at least 11 px
    write_image(tmp_path / "realtest" / "HR" / "a.png", _image(64, 56, 30))
    write_image(tmp_path / "realtest" / "LR" / "a.png", imresize(_image(64, 56, 31), scale=0.25))
    raw = yaml.safe_load(cfg_path.read_text())
    raw["data"]["real_lr"] = str(tmp_path / "real")
    raw["data"]["test_sets"].append(
        {"name": "real", "hr": str(tmp_path / "realtest" / "HR"), "lr": str(tmp_path / "realtest" / "LR"),
         "degradation": "real"}
    )  # fmt: skip
    raw["cyclegan"] = {
        **DEGRADATION_LEARNERS[learner],
        "iters": 2, "patch_size": 16, "eval_every": 2, "checkpoint_every": 2, "accept_poor": True,
    }  # fmt: skip
    cfg_path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"

    first = runner.invoke(_app(), ["train", "cyclegan", str(cfg_path), "--local", "--out", str(out)])

    assert first.exit_code == 0, first.output
    final = out / "cyclegan" / "final"
    assert (final / "generator.pt").is_file() and (final / "fidelity.json").is_file()
    variants = 2 if learner == "frequency_separation" else 1  # a G with a noise input: cache_variants
    assert sorted(p.name for p in (final / "lr").iterdir()) == [str(v) for v in range(variants)]
    for v in range(variants):
        assert sorted(p.name for p in (final / "lr" / str(v)).iterdir()) == [f"{i}.png" for i in range(4)]
    last = _rows(out / "cyclegan" / "metrics.jsonl")[-1]
    assert last["step"] == 2 and np.isfinite(last["real/g_psnr"]) and np.isfinite(last["real/bicubic_psnr"])
    assert last["fidelity/poor"] in (0.0, 1.0) and "fidelity/lowfreq_psnr" in last  # inf (null) if G = id

    second = runner.invoke(_app(), ["train", "srgan", str(cfg_path), "--workers", "0", "--out", str(out),
                                    "--set", "sr.mix_prob=1", "--cyclegan", str(out)])  # fmt: skip

    assert second.exit_code == 0, second.output
    rows = _rows(out / "pretrain" / "metrics.jsonl")
    assert all(r["mix/g_fraction"] == 1.0 for r in rows)  # every training LR came from G
    run = json.loads((out / "pretrain" / "run.json").read_text())
    assert run["inputs"]["cyclegan"] == str((out / "cyclegan" / "final").resolve())


def test_upscale_command_writes_x4_images(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, gan={"iters": 0})
    out = tmp_path / "out"
    assert (
        runner.invoke(_app(), ["train", "srgan", str(cfg), "--workers", "0", "--out", str(out)]).exit_code
        == 0
    )
    write_image(tmp_path / "lr" / "photo.png", _image(10, 14, 99))

    res = runner.invoke(
        _app(),
        [
            "upscale",
            str(out / "pretrain" / "final"),
            str(tmp_path / "lr"),
            "-o",
            str(tmp_path / "sr"),
            "--tile",
            "4",
        ],
    )

    assert res.exit_code == 0, res.output
    assert read_image(tmp_path / "sr" / "photo.png").shape == (40, 56, 3)


# ------------------------------------------------------------------------------------------ the launcher
def test_launch_rejects_unknown_stages_and_inputs_the_config_does_not_use(tmp_path: Path) -> None:
    cfg = validate_config(yaml.safe_load(tiny_config(tmp_path).read_text()))
    with pytest.raises(StageError, match="unknown stage 'warmup'; known: cyclegan, pretrain, gan"):
        launch("warmup", cfg, tmp_path / "x")
    with pytest.raises(StageError, match=r"not used: \['cyclegan'\].*sr.mix_prob=0"):
        launch("pretrain", cfg, tmp_path / "x", {"cyclegan": tmp_path})
    p1 = cfg.model_copy(update={"sr": cfg.sr.model_copy(update={"mix_prob": 1.0})})
    with pytest.raises(StageError, match=r"missing \['cyclegan'\]"):
        launch("pretrain", p1, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing claimed, nothing written


def test_find_artifact_accepts_an_artefact_a_stage_folder_or_a_run_folder(tmp_path: Path) -> None:
    final = tmp_path / "run" / "cyclegan" / "final"
    final.mkdir(parents=True)
    (final / "generator.pt").write_bytes(b"")
    for given in (tmp_path / "run", tmp_path / "run" / "cyclegan", final):
        assert find_artifact(given, "cyclegan") == final.resolve()
    with pytest.raises(FileNotFoundError, match="train the pretrain stage first"):
        find_artifact(tmp_path / "run", "pretrain")
