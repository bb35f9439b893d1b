"""Spec of csrgan.registry: name -> constructor registries, their arguments, discovery and plugins.

A registry refuses what it does not know by listing what it knows, never silently overrides a name,
and checks a constructor's YAML arguments against its signature (defaults filled in, injected
arguments refused, wrong types named). The experiment config builds on that: ``sr.generator`` is
validated through ``SR_GENERATORS``, and a ``plugins:`` module can register new networks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest
import torch

from csrgan.config import ConfigError, validate_config
from csrgan.models.artifacts import GeneratorSpec, build_generator
from csrgan.models.srgan import SRResNet
from csrgan.registry import SR_GENERATORS, Registry, RegistryError


def make_blur(
    sigma: float, size: int = 7, mode: Literal["reflect", "zero"] = "reflect", seed: int = 0
) -> dict:
    """A stand-in constructor: returns its arguments."""
    return {"sigma": sigma, "size": size, "mode": mode, "seed": seed}


class Sharpen:
    def __init__(self, amount: float = 1.0, *, radius: int = 2) -> None:
        self.amount, self.radius = amount, radius


@pytest.fixture
def widgets() -> Registry:
    reg = Registry("widget")
    reg.add("blur", make_blur, injected=("seed",))
    reg.register("sharpen")(Sharpen)
    return reg


# ------------------------------------------------------------------------------------------ names
def test_lookup_and_build_by_name(widgets: Registry) -> None:
    assert widgets.get("blur") is make_blur
    assert widgets.names() == ["blur", "sharpen"] == list(widgets)
    assert "sharpen" in widgets and "nope" not in widgets
    assert widgets.build("blur", sigma=2.0)["sigma"] == 2.0
    assert isinstance(widgets.build("sharpen", amount=0.5), Sharpen)


def test_unknown_name_lists_the_known_ones(widgets: Registry) -> None:
    with pytest.raises(RegistryError, match=r"^unknown widget 'nope'; known: blur, sharpen$") as info:
        widgets.get("nope")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value) == "unknown widget 'nope'; known: blur, sharpen"  # not KeyError's quoting
    with pytest.raises(RegistryError, match=r"known: \(none\)"):
        Registry("empty").get("x")


def test_unknown_name_in_a_csrgan_registry_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError, match="unknown SR generator 'edsr'; known: .*srresnet"):
        SR_GENERATORS.get("edsr")


def test_registering_a_name_twice_is_refused(widgets: Registry) -> None:
    with pytest.raises(RegistryError, match="widget 'blur' is already registered"):
        widgets.add("blur", lambda: None)
    with pytest.raises(RegistryError, match="already registered"):
        widgets.register("sharpen")(Sharpen)
    assert widgets.get("blur") is make_blur  # the first registration stands
    with pytest.raises(RegistryError, match="SR generator 'srresnet' is already registered"):
        SR_GENERATORS.add("srresnet", object)
    assert SR_GENERATORS.get("srresnet") is SRResNet


def test_register_defaults_to_the_object_name() -> None:
    reg = Registry("thing")

    @reg.register()
    def gizmo() -> None: ...

    assert reg.names() == ["gizmo"]


# -------------------------------------------------------------------------------------- arguments
def test_validate_fills_in_the_defaults(widgets: Registry) -> None:
    assert widgets.validate("blur", {"sigma": 1}) == {"sigma": 1.0, "size": 7, "mode": "reflect"}
    assert widgets.validate("sharpen", {}) == {"amount": 1.0, "radius": 2}  # keyword-only too
    assert SR_GENERATORS.validate("srresnet", {"channels": 8}) == {
        "channels": 8,
        "n_blocks": 16,
        "global_bicubic_skip": False,
    }


def test_arguments_are_the_constructor_parameters_minus_the_injected_ones(widgets: Registry) -> None:
    assert list(widgets.arguments("blur")) == ["sigma", "size", "mode"]
    assert widgets.injected("blur") == ("seed",)
    assert widgets.injected("sharpen") == ()


def test_validate_refuses_unknown_arguments_naming_them(widgets: Registry) -> None:
    with pytest.raises(
        RegistryError,
        match=r"widget 'blur' has no argument\(s\) \['sigm'\]; its arguments: sigma, size, mode",
    ):
        widgets.validate("blur", {"sigm": 1})


def test_validate_refuses_injected_arguments(widgets: Registry) -> None:
    with pytest.raises(
        RegistryError, match=r"widget 'blur': \['seed'\] are set by csrgan, not in the config"
    ):
        widgets.validate("blur", {"sigma": 1, "seed": 3})
    with pytest.raises(RegistryError, match=r"\['in_ch', 'scale'\] are set by csrgan"):
        SR_GENERATORS.validate("srresnet", {"scale": 2, "in_ch": 1})


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"sigma": "wide"}, ("widget 'blur'", "sigma:", "'wide'")),
        ({"sigma": 1, "size": "big"}, ("size:", "valid integer", "'big'")),
        ({"sigma": 1, "mode": "mirror"}, ("mode:", "'reflect' or 'zero'", "'mirror'")),
        ({}, ("sigma:", "Field required")),
    ],
)
def test_validate_refuses_wrong_types_and_missing_arguments_naming_them(
    widgets: Registry, kwargs: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(RegistryError) as info:
        widgets.validate("blur", kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_validate_of_an_unknown_name_lists_the_known_ones(widgets: Registry) -> None:
    with pytest.raises(RegistryError, match="unknown widget 'nope'; known: blur, sharpen"):
        widgets.validate("nope", {})


def test_build_with_takes_the_injected_arguments_from_the_context(widgets: Registry) -> None:
    built = widgets.build_with("blur", {"sigma": 1.5}, {"seed": 9, "unrelated": 1})
    assert built == {"sigma": 1.5, "size": 7, "mode": "reflect", "seed": 9}
    with pytest.raises(
        RegistryError, match=r"widget 'blur' needs \['seed'\], which the caller did not provide"
    ):
        widgets.build_with("blur", {"sigma": 1.5}, {})


# -------------------------------------------------------------------------------------- discovery
def test_discovery_imports_every_csrgan_models_submodule() -> None:
    """In a fresh interpreter nothing is imported until a registry is asked; then every module of
    csrgan.models is, so a network in a new file there registers itself."""
    code = textwrap.dedent(
        """
        import json, pkgutil, sys
        import csrgan.registry as R
        before = sorted(m for m in sys.modules if m.startswith("csrgan.models"))
        names = R.SR_GENERATORS.names()
        import csrgan.models
        subs = sorted(f"csrgan.models.{i.name}" for i in pkgutil.iter_modules(csrgan.models.__path__))
        print(json.dumps({"before": before, "names": names, "subs": subs,
                          "missing": [m for m in subs if m not in sys.modules]}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == []
    assert "srresnet" in got["names"]
    assert {"csrgan.models.srgan", "csrgan.models.cyclegan"} <= set(got["subs"])
    assert got["missing"] == []


def test_discovery_imports_the_submodules_of_the_named_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = f"csrgan_test_nets_{uuid.uuid4().hex[:8]}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text(
        f"from csrgan.registry import Registry\nNETS = Registry('net', discover=({pkg!r},))\n"
    )
    for name in ("alpha", "beta"):
        (tmp_path / pkg / f"{name}.py").write_text(
            f"from {pkg} import NETS\n\n\n@NETS.register({name!r})\n"
            "def build(width: int = 1):\n    return width\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = __import__(pkg)
    assert f"{pkg}.alpha" not in sys.modules  # nothing imported before the registry is asked
    assert mod.NETS.names() == ["alpha", "beta"]
    assert f"{pkg}.alpha" in sys.modules and f"{pkg}.beta" in sys.modules
    assert mod.NETS.build("beta", width=3) == 3


# ---------------------------------------------------------------------------------- the config file
def _raw(tmp: Path, **sr: Any) -> dict[str, Any]:
    """A minimal valid experiment (nothing is read or written while validating)."""
    return {
        "name": "registry",
        "storage": str(tmp / "storage"),
        "data": {"demo": {"dir": str(tmp / "demo")}, "scale": 4},
        "sr": {"patch_size": 16, **sr},
    }


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    cfg = validate_config(_raw(tmp_path, generator={"type": "srresnet", "channels": 8}))
    assert cfg.sr.generator.type == "srresnet" and cfg.sr.generator.channels == 8


@pytest.mark.parametrize(
    ("generator", "fragments"),
    [
        ({"type": "nosuch"}, ("unknown SR generator 'nosuch'; known:", "srresnet")),
        ({"type": "srresnet", "depth": 4}, ("has no argument(s) ['depth']", "channels")),
        ({"type": "srresnet", "channels": "wide"}, ("channels:", "'wide'")),
        ({"type": "srresnet", "scale": 2}, ("['scale'] are set by csrgan",)),
    ],
)
def test_a_bad_generator_spec_is_a_config_error_naming_sr_generator(
    tmp_path: Path, generator: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(_raw(tmp_path, generator=generator), source="exp.yaml")
    msg = str(info.value)
    assert msg.startswith("exp.yaml: invalid experiment config"), msg
    assert "- sr.generator: " in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg


PLUGIN = '''
"""A test plugin: one SR generator registered into csrgan's registry."""
import torch.nn.functional as F
from torch import nn

from csrgan.registry import SR_GENERATORS


@SR_GENERATORS.register({name!r}, injected=("in_ch", "scale"))
class NearestUpsampler(nn.Module):
    def __init__(self, in_ch: int = 3, scale: int = 4, gain: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch_ones(in_ch, gain))

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") * self.weight.view(1, -1, 1, 1)


def torch_ones(n, gain):
    import torch

    return torch.full((n,), float(gain))
'''


def test_a_plugin_module_registers_a_new_sr_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix = uuid.uuid4().hex[:8]
    module, name = f"csrgan_test_plugin_{suffix}", f"plugin_nearest_{suffix}"
    (tmp_path / f"{module}.py").write_text(PLUGIN.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ConfigError, match=rf"- sr.generator: unknown SR generator '{name}'"):
        validate_config(_raw(tmp_path, generator={"type": name}))  # without the plugin: unknown

    raw = {"plugins": [module], **_raw(tmp_path, generator={"type": name, "gain": 2})}
    cfg = validate_config(raw)
    assert cfg.plugins == [module] and module in sys.modules
    assert cfg.sr.generator.type == name
    assert cfg.sr.generator.kwargs() == {"gain": 2.0}  # validated against the plugin's signature
    assert name in SR_GENERATORS.names()

    # the plugin's arguments are checked like a built-in's
    bad = {"plugins": [module], **_raw(tmp_path, generator={"type": name, "scale": 2})}
    with pytest.raises(ConfigError, match=r"- sr.generator: .*\['scale'\] are set by csrgan"):
        validate_config(bad)

    # and a plugin network is built and saved like a built-in one
    net = build_generator(GeneratorSpec("sr", name, cfg.sr.generator.kwargs(), scale=4))
    assert net(torch.ones(1, 3, 2, 3)).shape == (1, 3, 8, 12)
    assert torch.equal(net(torch.ones(1, 3, 2, 2)), torch.full((1, 3, 8, 8), 2.0))


def test_a_plugin_that_cannot_be_imported_is_a_config_error(tmp_path: Path) -> None:
    module = f"csrgan_test_missing_plugin_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConfigError, match=rf"plugins\.0: cannot import '{module}'"):
        validate_config({"plugins": [module], **_raw(tmp_path)})
