"""Spec for csrgan.weights and ``csrgan weights``: offline lookup, explicit-only random weights,
hash-checked loading, resumable downloads from a loopback server, and the CLI's exit codes.

Every test gets an empty temporary torch cache (TORCH_HOME + torch.hub.set_dir). Checkpoint files
are made here from torchvision models with seeded random weights and named by torchvision's
hash-prefix convention (``<arch>-<first 8 hex of their own sha256>.pth``); tests that need them
under the official name point the spec at that name, since no test file can hash to ``dcbb9e9d``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from http_server import LoopbackHTTPServer
from typer.testing import CliRunner

from csrgan import weights as W
from csrgan.cli.weights import app

runner = CliRunner()


# --------------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache for each test; the process-wide hub dir is restored afterwards."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored by monkeypatch at teardown
    torch.hub.set_dir(str(home / "hub"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return home


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _name_by_hash(tmp: Path, stem: str) -> Path:
    """Rename ``tmp`` to ``<stem>-<its sha256 prefix>.pth`` (torchvision's convention)."""
    named = tmp.with_name(f"{stem}-{_sha256(tmp)[:8]}.pth")
    tmp.rename(named)
    return named


def _make_checkpoint(folder: Path, arch: str, seed: int) -> tuple[Path, torch.nn.Module]:
    """Save a torchvision ``arch`` state dict with seeded random features (classifier zero: cheap)."""
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("features."):
                p.normal_(0.0, 0.05, generator=gen)
            else:
                p.zero_()
    tmp = folder / f"{arch}.tmp"
    torch.save(model.state_dict(), tmp)
    return _name_by_hash(tmp, arch), model


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    return _make_checkpoint(tmp_path_factory.mktemp("vgg19"), "vgg19", seed=19)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    return _make_checkpoint(tmp_path_factory.mktemp("alexnet"), "alexnet", seed=7)


def _use_filename(monkeypatch: pytest.MonkeyPatch, name: str, filename: str) -> W.WeightSpec:
    """Make ``filename`` the official file of weights ``name`` (for test files with their own hash)."""
    spec = dataclasses.replace(W.SPECS[name], filename=filename)
    monkeypatch.setitem(W.SPECS, name, spec)
    return spec


def _into_cache(path: Path) -> Path:
    W.cache_dir().mkdir(parents=True, exist_ok=True)
    target = W.cache_dir() / path.name
    os.symlink(path, target)  # no 550 MB copy; the in-process hash cache follows the link
    return target


def _assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


PROVENANCE_RE = r"{name}:{file} sha256:[0-9a-f]{{12}}"


# --------------------------------------------------------------------------------------------------
# lookup: offline, never random unless asked
# --------------------------------------------------------------------------------------------------
def test_cache_dir_is_torch_hub_checkpoints(torch_home: Path) -> None:
    assert W.cache_dir() == torch_home / "hub" / "checkpoints"
    assert W.weights_path("vgg19") == torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert W.weights_path("alexnet").name == "alexnet-owt-7be5be79.pth"
    assert W.weights_path("vgg16").name == "vgg16-397923af.pth"


def test_official_names_and_urls_come_from_torchvision() -> None:
    assert W.SPECS["vgg19"].url == torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
    assert W.SPECS["alexnet"].url == torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    assert W.SPECS["vgg19"].hash_prefix == "dcbb9e9d"
    assert W.SPECS["alexnet"].hash_prefix == "7be5be79"


def test_missing_vgg19_names_file_path_and_fix(torch_home: Path) -> None:
    with pytest.raises(W.MissingWeightsError) as err:
        W.load_vgg19_features()
    msg = str(err.value)
    expected = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert "vgg19-dcbb9e9d.pth" in msg
    assert str(expected) in msg
    assert "csrgan weights download vgg19" in msg
    assert "weights.vgg19" in msg and "--weights" not in msg  # the key that exists, not a missing option
    assert err.value.expected_path == expected
    assert err.value.cache_dir == expected.parent
    assert not expected.parent.exists() or not any(expected.parent.iterdir()), "nothing may be downloaded"


def test_missing_explicit_source_names_that_path(tmp_path: Path) -> None:
    wanted = tmp_path / "nowhere" / "my-vgg.pth"
    with pytest.raises(W.MissingWeightsError, match=re.escape(str(wanted))):
        W.load_vgg19_features(source=wanted)


def test_random_vgg19_only_when_asked_and_provenance_says_random() -> None:
    features, provenance = W.load_vgg19_features(random_init=True)
    assert "random" in provenance
    assert provenance == "vgg19:random-init (explicit)"
    assert isinstance(features, torch.nn.Sequential)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in features) == 16
    assert not features.training
    assert all(not p.requires_grad for p in features.parameters())
    assert features[0].weight.std() > 0, "weights must be initialised, not empty memory"
    out = features(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 512, 1, 1)


def test_source_and_random_together_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(W.WeightsError, match="choose one"):
        W.load_vgg19_features(source=tmp_path / "x.pth", random_init=True)
    with pytest.raises(W.WeightsError, match="choose one"):
        W.load_lpips(source=tmp_path / "x.pth", random_backbone=True)


# --------------------------------------------------------------------------------------------------
# loading real files
# --------------------------------------------------------------------------------------------------
def test_vgg19_from_cache_gives_the_saved_tensors(
    vgg19_file: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, model = vgg19_file
    _use_filename(monkeypatch, "vgg19", path.name)
    _into_cache(path)
    features, provenance = W.load_vgg19_features()
    _assert_same_tensors(features, model.features)
    assert re.fullmatch(PROVENANCE_RE.format(name="vgg19", file=re.escape(path.name)), provenance)
    assert provenance.endswith(_sha256(path)[:12])
    assert not features.training
    assert all(not p.requires_grad for p in features.parameters())
    assert all(p.device.type == "cpu" for p in features.parameters())


def test_vgg19_from_explicit_file_or_folder(vgg19_file: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, model = vgg19_file
    features, provenance = W.load_vgg19_features(source=path)
    _assert_same_tensors(features, model.features)
    assert provenance.startswith(f"vgg19:{path.name} sha256:")
    # a folder holding the official file name (e.g. a copied checkpoints dir) works too
    folder = tmp_path / "copied_checkpoints"
    folder.mkdir()
    os.symlink(path, folder / W.SPECS["vgg19"].filename)
    with pytest.raises(W.CorruptWeightsError, match="dcbb9e9d"):
        W.load_vgg19_features(source=folder)  # ... and its hash is checked against that name


def test_official_name_with_wrong_content_is_rejected_not_loaded() -> None:
    cache = W.cache_dir()
    cache.mkdir(parents=True)
    (cache / "vgg19-dcbb9e9d.pth").write_bytes(b"not the ImageNet weights")
    with pytest.raises(W.CorruptWeightsError) as err:
        W.load_vgg19_features()
    assert "dcbb9e9d" in str(err.value) and "vgg19-dcbb9e9d.pth" in str(err.value)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "my_vgg.pth"  # no hash prefix in the name: no hash check, but torch.load fails
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(W.CorruptWeightsError, match=re.escape(str(junk))):
        W.load_vgg19_features(source=junk)


def test_checkpoint_of_another_architecture_is_rejected(alexnet_file: tuple[Path, torch.nn.Module]) -> None:
    path, _ = alexnet_file
    with pytest.raises(W.CorruptWeightsError, match="not a torchvision vgg19 state dict"):
        W.load_vgg19_features(source=path)


def test_file_hash_is_computed_once_per_path_mtime_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = hashlib.sha256

    def counting() -> hashlib._Hash:
        calls.append(1)
        return real()

    monkeypatch.setattr(W.hashlib, "sha256", counting)
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert W.file_sha256(f) == real(b"abc").hexdigest()
    assert W.file_sha256(f) == real(b"abc").hexdigest()
    assert len(calls) == 1
    f.write_bytes(b"abcd")  # new size (and mtime): hashed again
    assert W.file_sha256(f) == real(b"abcd").hexdigest()
    assert len(calls) == 2


def test_hash_prefix_convention() -> None:
    assert W.hash_prefix_of("vgg19-dcbb9e9d.pth") == "dcbb9e9d"
    assert W.hash_prefix_of("alexnet-owt-7be5be79.pth") == "7be5be79"
    assert W.hash_prefix_of("my_vgg.pth") is None
    assert W.hash_prefix_of("vgg19-run-2.pth") is None  # not a hash


# --------------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------------
def test_lpips_random_backbone_is_a_distance_and_says_random() -> None:
    model, provenance = W.load_lpips("alex", random_backbone=True)
    assert "random" in provenance
    assert provenance.startswith("lpips-v0.1:alex.pth sha256:")
    assert provenance.endswith("alexnet:random-init (explicit)")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    y = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        same = model(x, x).flatten()
        diff = model(x, y).flatten()
    assert torch.all(same == 0)
    assert torch.all(diff > 0)
    assert all(not p.requires_grad for p in model.parameters())


def test_lpips_linear_layers_come_from_the_lpips_package() -> None:
    model, provenance = W.load_lpips("alex", random_backbone=True)
    lin_file = W.lpips_lin_path("alex")
    assert lin_file.is_file()
    shipped = torch.load(lin_file, map_location="cpu", weights_only=True)
    for key, value in shipped.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert f"sha256:{_sha256(lin_file)[:12]}" in provenance


def test_lpips_backbone_file_matches_torchvision_alexnet_features(
    alexnet_file: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, alexnet = alexnet_file
    _use_filename(monkeypatch, "alexnet", path.name)
    _into_cache(path)
    model, provenance = W.load_lpips("alex")
    convs = {name: m for name, m in model.net.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert len(convs) == 5
    for name, conv in convs.items():
        index = int(name.rsplit(".", 1)[1])  # lpips keeps torchvision's layer index: slice2.3 -> features[3]
        assert torch.equal(conv.weight, alexnet.features[index].weight), name
        assert torch.equal(conv.bias, alexnet.features[index].bias), name
    assert provenance.endswith(f"alexnet:{path.name} sha256:{_sha256(path)[:12]}")
    # same features -> the LPIPS trunk computes exactly torchvision's activations
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.net(x).relu5, alexnet.features[:12](x))


def test_lpips_missing_backbone_names_the_alexnet_file() -> None:
    with pytest.raises(W.MissingWeightsError) as err:
        W.load_lpips("alex")
    assert "alexnet-owt-7be5be79.pth" in str(err.value)
    assert "csrgan weights download alexnet" in str(err.value)


def test_lpips_unknown_net_lists_supported() -> None:
    with pytest.raises(W.WeightsError, match="alex, vgg"):
        W.load_lpips("squeeze")


def test_lpips_missing_linear_layers_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(W, "lpips_lin_path", lambda net="alex": tmp_path / "v0.1" / f"{net}.pth")
    with pytest.raises(W.MissingWeightsError, match="lpips pip package"):
        W.load_lpips("alex", random_backbone=True)


# --------------------------------------------------------------------------------------------------
# download (loopback server only)
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, bytes, W.WeightSpec]]:
    """A 300 kB payload served under a name carrying its own hash prefix, set as vgg19's file."""
    root = tmp_path / "www"
    root.mkdir()
    payload = os.urandom(300_000)
    tmp = root / "payload.tmp"
    tmp.write_bytes(payload)
    path = _name_by_hash(tmp, "vgg19")
    spec = _use_filename(monkeypatch, "vgg19", path.name)
    yield root, payload, spec


def test_download_from_loopback_lands_in_cache_verified(
    served: tuple[Path, bytes, W.WeightSpec],
) -> None:
    root, payload, spec = served
    with LoopbackHTTPServer(root) as server:
        url = server.url_for(spec.filename)
        path = W.download("vgg19", url=url, progress=False)
        assert path == W.cache_dir() / spec.filename
        assert path.read_bytes() == payload
        assert not path.with_name(path.name + ".part").exists()
        assert server.count(f"/{spec.filename}", "GET") == 1
        # already present and verified: no second request
        assert W.download("vgg19", url=url, progress=False) == path
        assert server.count() == 1


def test_download_resumes_a_partial_file_with_range(served: tuple[Path, bytes, W.WeightSpec]) -> None:
    root, payload, spec = served
    part = W.cache_dir() / (spec.filename + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(payload[:100_000])
    with LoopbackHTTPServer(root) as server:
        path = W.download("vgg19", url=server.url_for(spec.filename), progress=False)
        (request,) = server.requests
    assert request.range == "bytes=100000-"
    assert request.status == 206
    assert path.read_bytes() == payload


def test_interrupted_download_keeps_part_and_next_call_resumes(
    served: tuple[Path, bytes, W.WeightSpec],
) -> None:
    root, payload, spec = served
    with LoopbackHTTPServer(root, drop_first_after=120_000) as server:
        url = server.url_for(spec.filename)
        with pytest.raises(W.DownloadError) as err:
            W.download("vgg19", url=url, progress=False)
        part = W.cache_dir() / (spec.filename + ".part")
        assert str(part) in str(err.value) and "resume" in str(err.value)
        kept = part.stat().st_size
        assert 0 < kept < len(payload)
        path = W.download("vgg19", url=url, progress=False)
        assert (server.requests[-1].range, server.requests[-1].status) == (f"bytes={kept}-", 206)
    assert path.read_bytes() == payload
    assert not part.exists()


def test_download_restarts_when_server_ignores_range(served: tuple[Path, bytes, W.WeightSpec]) -> None:
    root, payload, spec = served
    part = W.cache_dir() / (spec.filename + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(payload[:50_000])
    with LoopbackHTTPServer(root, support_range=False) as server:
        path = W.download("vgg19", url=server.url_for(spec.filename), progress=False)
        assert [r.status for r in server.requests] == [200]
    assert path.read_bytes() == payload


def test_download_with_wrong_hash_is_rejected_and_deleted(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "vgg19-dcbb9e9d.pth").write_bytes(os.urandom(10_000))  # official name, wrong bytes
    with LoopbackHTTPServer(root) as server, pytest.raises(W.CorruptWeightsError) as err:
        W.download("vgg19", url=server.url_for("vgg19-dcbb9e9d.pth"), progress=False)
    assert "dcbb9e9d" in str(err.value)
    assert not (W.cache_dir() / "vgg19-dcbb9e9d.pth").exists()
    assert not (W.cache_dir() / "vgg19-dcbb9e9d.pth.part").exists()


def test_stale_part_failing_the_hash_is_redownloaded_from_scratch(
    served: tuple[Path, bytes, W.WeightSpec],
) -> None:
    root, payload, spec = served
    part = W.cache_dir() / (spec.filename + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # junk from some earlier attempt
    with LoopbackHTTPServer(root) as server:
        path = W.download("vgg19", url=server.url_for(spec.filename), progress=False)
        assert [r.range for r in server.requests] == ["bytes=1000-", None]
    assert path.read_bytes() == payload


def test_download_http_error_and_unreachable_server_are_download_errors(tmp_path: Path) -> None:
    with LoopbackHTTPServer(tmp_path) as server:
        missing_url = server.url_for("vgg19-dcbb9e9d.pth")
        with pytest.raises(W.DownloadError, match="HTTP 404"):
            W.download("vgg19", url=missing_url, progress=False)
    # the server is stopped now: connection refused
    with pytest.raises(W.DownloadError, match=re.escape(missing_url)):
        W.download("vgg19", url=missing_url, progress=False, timeout=5)


def test_download_to_explicit_dir(served: tuple[Path, bytes, W.WeightSpec], tmp_path: Path) -> None:
    root, payload, spec = served
    with LoopbackHTTPServer(root) as server:
        path = W.download("vgg19", url=server.url_for(spec.filename), dest_dir=tmp_path / "d", progress=False)
    assert path == tmp_path / "d" / spec.filename
    assert path.read_bytes() == payload


def test_lpips_linear_layers_are_not_downloadable() -> None:
    with pytest.raises(W.WeightsError, match="ships inside the lpips pip package"):
        W.download("lpips-alex")


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(W.WeightsError, match="known: vgg19, alexnet, vgg16, niqe, lpips-alex, lpips-vgg"):
        W.download("resnet50")


def test_status_rows_describe_every_file(served: tuple[Path, bytes, W.WeightSpec], torch_home: Path) -> None:
    rows = {r["name"]: r for r in W.status()}
    assert set(rows) == {"vgg19", "alexnet", "vgg16", "niqe", "lpips-alex", "lpips-vgg"}
    assert rows["alexnet"]["present"] is False and rows["alexnet"]["size"] is None
    assert rows["lpips-alex"]["present"] is True and rows["lpips-alex"]["downloadable"] is False
    root, payload, spec = served
    W.cache_dir().mkdir(parents=True)
    shutil.copy(root / spec.filename, W.cache_dir())
    row = {r["name"]: r for r in W.status()}["vgg19"]
    assert row["present"] is True and row["size"] == len(payload)
    assert row["path"] == str(torch_home / "hub" / "checkpoints" / spec.filename)
    assert row["used_for"]


# --------------------------------------------------------------------------------------------------
# the loopback server itself (shared with the DIV2K download tests)
# --------------------------------------------------------------------------------------------------
def test_loopback_server_serves_ranges_and_counts(tmp_path: Path) -> None:
    import requests

    (tmp_path / "f.bin").write_bytes(bytes(range(100)))
    with LoopbackHTTPServer(tmp_path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        full = requests.get(server.url_for("f.bin"), timeout=5)
        part = requests.get(server.url_for("f.bin"), headers={"Range": "bytes=90-"}, timeout=5)
        beyond = requests.get(server.url_for("f.bin"), headers={"Range": "bytes=100-"}, timeout=5)
        outside = requests.get(f"{server.url}/../etc/passwd", timeout=5)
        assert (full.status_code, full.content) == (200, bytes(range(100)))
        assert (part.status_code, part.content) == (206, bytes(range(90, 100)))
        assert part.headers["Content-Range"] == "bytes 90-99/100"
        assert beyond.status_code == 416
        assert outside.status_code == 404
        assert server.count("/f.bin") == 3


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def test_cli_status_json_lists_missing_files(torch_home: Path) -> None:
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["vgg19"]["present"] is False
    assert rows["vgg19"]["path"] == str(torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth")


def test_cli_status_table() -> None:
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "MISSING" in result.stdout and "present" in result.stdout
    assert str(W.cache_dir()) in result.stdout


def test_cli_path_and_check(torch_home: Path) -> None:
    result = runner.invoke(app, ["path", "vgg19"])
    assert result.exit_code == 0
    assert result.stdout.strip() == str(torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth")
    result = runner.invoke(app, ["path", "vgg19", "--check"])
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_cli_expected_errors_exit_1_without_traceback(tmp_path: Path) -> None:
    for args in (["download", "resnet50"], ["path", "resnet50"], ["download", "all", "--url", "http://x"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, args
        assert result.stderr.startswith("error: "), args
        assert "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)
    with LoopbackHTTPServer(tmp_path) as server:  # 404: a download error, reported the same way
        result = runner.invoke(app, ["download", "vgg19", "--url", server.url_for("nope.pth"), "-q"])
    assert result.exit_code == 1
    assert "HTTP 404" in result.stderr


def test_cli_download_from_mirror(served: tuple[Path, bytes, W.WeightSpec]) -> None:
    root, payload, spec = served
    with LoopbackHTTPServer(root) as server:
        result = runner.invoke(app, ["download", "vgg19", "--mirror", server.url + "/", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"vgg19: {W.cache_dir() / spec.filename}"
    assert (W.cache_dir() / spec.filename).read_bytes() == payload
