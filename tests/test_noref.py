"""No-reference scoring (NIQE) of real LR photos: the CLI without --hr, the model file's lookup, download
and checks, and experiments with test sets that have no HR.

The real NIQE model (the LIVE release's ``modelparameters.mat``) cannot be fetched here. The fixture
model is an honest stand-in: fitted by deepinv's own ``NIQE.create_weights`` (the library's fitting
code: two scales, 96 px blocks, sharpness threshold 0.75, as the LIVE release) on 40 pristine BSD100 HR
images from ../shared/datasets, saved in deepinv's ``.pt`` format and, for the download path, in the
LIVE ``.mat`` format under the official file name. Its provenance says "custom model, not the LIVE
release" everywhere it is recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from http_server import LoopbackHTTPServer
from typer.testing import CliRunner

from csrgan import noref
from csrgan import weights as W
from csrgan.cli.app import app
from csrgan.config import ConfigError, validate_config
from csrgan.data.io import read_image, write_image
from csrgan.data.resize import imresize

runner = CliRunner()
REALSR = ("chip.png", "comic1.png", "Lincoln.png")  # the three smallest RealSRSet photos (120-160 px)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache for each test; the process-wide hub dir is restored afterwards."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    torch.hub.set_dir(str(home / "hub"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return home


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """NIQE's small block ops gain nothing from intra-op threads; on a shared 2-core CI box they cost 3-8x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fitted(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A NIQE model fitted by deepinv's ``create_weights`` on 40 BSD100 HR images: ``.pt`` and ``.mat``."""
    import scipy.io
    from deepinv.loss.metric import NIQE

    out = tmp_path_factory.mktemp("niqe_fit")
    paths = sorted((shared_datasets / "BSD100" / "HR").glob("*.png"))[:40]
    images = [torch.from_numpy(read_image(p).copy()).permute(2, 0, 1).double() for p in paths]
    niqe = NIQE(weights_path=None, round_tensor=True, dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures start before the module's one_torch_thread
    try:
        mu, cov = niqe.create_weights(images, sharpness_threshold=0.75, save_path=out / "bsd100_fit.pt")
    finally:
        torch.set_num_threads(threads)
    assert torch.linalg.matrix_rank(cov) == 36  # enough sharp blocks for a full-rank model
    mat = out / "www" / W.NIQE_FILENAME
    mat.parent.mkdir()
    scipy.io.savemat(mat, {"mu_prisparam": mu.numpy()[None], "cov_prisparam": cov.numpy()})
    return {"pt": out / "bsd100_fit.pt", "mat": mat}


@pytest.fixture
def realsr(shared_datasets: Path, tmp_path: Path) -> Path:
    lr = tmp_path / "realsr_lr"
    lr.mkdir()
    for name in REALSR:
        shutil.copy(shared_datasets / "RealSRSet+5images" / "LR_real" / name, lr / name)
    return lr


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _registry_expects(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make the registry's niqe entry expect ``path``'s bytes (the fixture stands in for the LIVE file)."""
    spec = dataclasses.replace(W.SPECS["niqe"], sha256=_sha256(path))
    monkeypatch.setitem(W.SPECS, "niqe", spec)


def _in_cache(monkeypatch: pytest.MonkeyPatch, mat: Path) -> Path:
    _registry_expects(monkeypatch, mat)
    W.cache_dir().mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(mat, W.cache_dir() / W.NIQE_FILENAME))


# ------------------------------------------------------------------------------------------ registry
def test_the_live_model_is_registered_with_url_and_full_checksum() -> None:
    spec = W.SPECS["niqe"]
    assert spec.filename == W.NIQE_FILENAME and spec.url.startswith("https://")
    assert spec.url.endswith("/" + W.NIQE_FILENAME)
    assert spec.sha256 == spec.hash_prefix == W.NIQE_LIVE_SHA256 and len(spec.sha256) == 64
    row = next(r for r in W.status() if r["name"] == "niqe")
    assert row["downloadable"] and not row["present"] and row["path"] == str(W.cache_dir() / W.NIQE_FILENAME)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_without_hr_scores_real_photos_and_records_the_model(
    realsr: Path, fitted: dict[str, Path]
) -> None:
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--method",
            "bicubic",
            "--lr",
            str(realsr),
            "--niqe-params",
            str(fitted["pt"]),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (
        out["hr"] is None
        and out["n"] == 3
        and sorted(r["name"] for r in out["images"]) == sorted(Path(n).stem for n in REALSR)
    )
    values = [r["niqe"] for r in out["images"]]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert out["mean"]["niqe"] == pytest.approx(float(np.mean(values)))
    model = out["noref_models"]["niqe"]
    assert (
        model
        == f"niqe:bsd100_fit.pt sha256:{_sha256(fitted['pt'])[:12]} (custom model, not the LIVE release)"
    )
    assert out["noref_protocol"] == noref.NOREF_PROTOCOL
    # the CLI's number is the library's NIQE of the bicubic SR cropped by the scale
    lr = read_image(realsr / "chip.png")
    direct = noref.NIQEMetric(fitted["pt"])(imresize(lr, output_shape=(lr.shape[0] * 4, lr.shape[1] * 4)), 4)
    assert next(r["niqe"] for r in out["images"] if r["name"] == "chip") == pytest.approx(direct, rel=1e-12)


def test_cli_missing_niqe_model_is_an_actionable_error(realsr: Path) -> None:
    res = runner.invoke(app, ["evaluate", "--method", "bicubic", "--lr", str(realsr)])
    assert res.exit_code == 1, res.output
    assert "csrgan weights download niqe" in res.output
    assert str(W.cache_dir() / W.NIQE_FILENAME) in res.output and "--niqe-params" in res.output
    assert "Traceback" not in res.output


def test_cli_full_reference_metric_without_hr_is_refused(realsr: Path) -> None:
    res = runner.invoke(
        app, ["evaluate", "--method", "bicubic", "--lr", str(realsr), "--metrics", "psnr,niqe"]
    )
    assert res.exit_code == 2 and "no --hr was given" in res.output and "niqe" in res.output
    res = runner.invoke(app, ["evaluate", "--method", "bicubic"])
    assert res.exit_code == 2 and "--lr" in res.output


# ------------------------------------------------------------------------------------------ download
def test_download_from_loopback_checks_the_checksum_then_scores(
    monkeypatch: pytest.MonkeyPatch, fitted: dict[str, Path], realsr: Path
) -> None:
    mat = fitted["mat"]
    _registry_expects(monkeypatch, mat)
    with LoopbackHTTPServer(mat.parent) as server:
        res = runner.invoke(app, ["weights", "download", "niqe", "--url", server.url_for(mat.name), "-q"])
        assert res.exit_code == 0, res.output
        assert server.count(f"/{mat.name}", "GET") == 1
    cached = W.cache_dir() / W.NIQE_FILENAME
    assert cached.read_bytes() == mat.read_bytes()
    status = json.loads(runner.invoke(app, ["weights", "status", "--json"]).output)
    assert next(r for r in status if r["name"] == "niqe")["present"]

    scorer = noref.cached_noref(["niqe"])["niqe"]  # from the cache, as experiments load it
    assert scorer.provenance.endswith("(custom model, not the LIVE release)")
    assert scorer.provenance.startswith(f"niqe:{W.NIQE_FILENAME} sha256:{_sha256(mat)[:12]}")
    lr = read_image(realsr / "comic1.png")
    assert math.isfinite(scorer(imresize(lr, scale=4), 4))


def test_download_with_a_wrong_checksum_is_deleted_not_cached(
    monkeypatch: pytest.MonkeyPatch, fitted: dict[str, Path], tmp_path: Path
) -> None:
    _registry_expects(monkeypatch, fitted["mat"])
    www = tmp_path / "www"
    www.mkdir()
    (www / W.NIQE_FILENAME).write_bytes(fitted["mat"].read_bytes()[:-1] + b"\0")  # one byte changed
    with LoopbackHTTPServer(www) as server:
        res = runner.invoke(
            app, ["weights", "download", "niqe", "--url", server.url_for(W.NIQE_FILENAME), "-q"]
        )
    assert res.exit_code == 1 and "sha256" in res.output
    assert not (W.cache_dir() / W.NIQE_FILENAME).exists()
    assert not list(W.cache_dir().glob("*.part"))


def test_cached_file_that_is_not_the_registered_model_is_refused(
    monkeypatch: pytest.MonkeyPatch, fitted
) -> None:
    W.cache_dir().mkdir(parents=True)
    shutil.copy(fitted["mat"], W.cache_dir() / W.NIQE_FILENAME)  # registry still expects the LIVE file
    with pytest.raises(W.CorruptWeightsError, match="csrgan weights download niqe --force"):
        noref.load_niqe_model()


def test_malformed_model_and_too_small_image_are_clear_errors(
    tmp_path: Path, fitted: dict[str, Path]
) -> None:
    import scipy.io

    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {"mu_prisparam": np.zeros((1, 18)), "cov_prisparam": np.eye(18)})
    with pytest.raises(W.CorruptWeightsError, match="mean of 36"):
        noref.load_niqe_model(bad)
    (tmp_path / "junk.mat").write_bytes(b"not a mat file")
    with pytest.raises(W.CorruptWeightsError, match="cannot read"):
        noref.load_niqe_model(tmp_path / "junk.mat")
    scorer = noref.NIQEMetric(fitted["pt"])
    with pytest.raises(ValueError, match="at least 2 whole 96x96 blocks"):
        scorer(np.zeros((100, 300, 3), np.uint8), 4)  # 92 px high after the crop: no whole block


def test_fitted_model_prefers_pristine_to_bicubic(shared_datasets: Path, fitted: dict[str, Path]) -> None:
    """The fixture is a working NIQE model: an HR photo scores better (lower) than its bicubic x4 SR."""
    scorer = noref.NIQEMetric(fitted["pt"])
    hr = read_image(sorted((shared_datasets / "BSD100" / "HR").glob("*.png"))[60])  # not in the fit
    sr = imresize(imresize(hr, scale=0.25), output_shape=hr.shape[:2])
    assert scorer(hr, 4) < scorer(sr, 4)


# ------------------------------------------------------------------------------------------ experiments
def _experiment(tmp_path: Path, shared: Path, lr: Path, **search: str) -> dict:
    return {
        "name": "noref",
        "storage": str(tmp_path / "runs"),
        "data": {
            "train_hr": str(shared / "Set5" / "HR"),
            "test_sets": [
                {"name": "set5", "hr": str(shared / "Set5" / "HR")},
                {"name": "realsr", "lr": str(lr)},
            ],
        },
        "sr": {
            "mix_prob": 0.0,
            "generator": {"channels": 8, "n_blocks": 1},
            "gan": {"content": {"type": "mse"}},
        },
        "eval": {"metrics": ["psnr", "ssim"]},
        "search": {"method": "grid", "metric": {"name": search.get("metric", "set5/psnr")}, "parameters": {}},
    }


def test_experiment_with_lr_only_set_validates_preflights_and_reports_niqe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_datasets: Path, realsr: Path, fitted
) -> None:
    from csrgan.evaluation import evaluate_bicubic, evaluate_sr_model
    from csrgan.preflight import PreflightError, preflight

    cfg = validate_config(_experiment(tmp_path, shared_datasets, realsr))
    set5, real = cfg.data.test_sets
    assert real.noref_for(cfg.eval.metrics) == ["niqe"] and set5.noref_for(cfg.eval.metrics) == []
    with pytest.raises(PreflightError) as err:  # no model yet: one problem, saying how to get it
        preflight([cfg], stages={"sr"})
    assert len(err.value.problems) == 1 and "data.test_sets[realsr]" in err.value.problems[0]
    assert "csrgan weights download niqe" in err.value.problems[0]

    _in_cache(monkeypatch, fitted["mat"])
    preflight([cfg], stages={"sr"})
    base = evaluate_bicubic(cfg.data.test_sets, 4, cfg.eval.metrics)
    assert set(base) == {"set5/psnr", "set5/ssim", "realsr/niqe"} and base["realsr/niqe"] > 0

    def up(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    got = evaluate_sr_model(up, [real], 4, cfg.eval.metrics, lpips=None, device="cpu")
    assert set(got) == {"realsr/niqe"} and got["realsr/niqe"] != pytest.approx(base["realsr/niqe"])


def test_search_on_a_set_without_hr_is_still_refused(
    tmp_path: Path, shared_datasets: Path, realsr: Path
) -> None:
    raw = _experiment(tmp_path, shared_datasets, realsr, metric="realsr/psnr")
    with pytest.raises(ConfigError, match="has no `hr`"):
        validate_config(raw)
    raw["data"]["test_sets"][1]["noref_metrics"] = ["psnr"]
    raw["search"]["metric"]["name"] = "set5/psnr"
    with pytest.raises(ConfigError, match="compare with the HR"):
        validate_config(raw)


def test_preflight_names_lr_images_too_small_for_niqe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_datasets: Path, fitted
) -> None:
    from csrgan.preflight import preflight_problems

    lr = tmp_path / "tiny_lr"
    lr.mkdir()
    bird = read_image(shared_datasets / "Set5" / "LR_bicubic_x4" / "birdx4.png")
    write_image(lr / "bird.png", bird[:40, :48])  # SR 160x192, 152x184 after the crop: 1 whole block
    _in_cache(monkeypatch, fitted["mat"])
    problems = preflight_problems(
        [validate_config(_experiment(tmp_path, shared_datasets, lr))], stages={"sr"}
    )
    assert len(problems) == 1 and "bird.png" in problems[0] and "NIQE needs 2" in problems[0]
    raw = _experiment(tmp_path, shared_datasets, lr)
    raw["data"]["test_sets"][1]["noref_metrics"] = []
    assert preflight_problems([validate_config(raw)], stages={"sr"}) == []
