"""Every exception csrgan defines can be built from its message and survives pickling with it.

Ray re-raises a worker's exception in the driver by unpickling it, which calls ``cls(*args)``: a class
whose constructor needs more than the message (``MissingWeightsError`` had keyword-only arguments) then
turned a missing-weights message into ``TypeError: __init__() missing 3 required keyword-only
arguments`` and the user never saw the real message.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import csrgan
from csrgan.sweep.driver import error_headline


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(csrgan.__path__, "csrgan."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


CLASSES = _exception_classes()


def test_the_package_defines_the_errors_we_expect() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"MissingWeightsError", "ConfigError", "PreflightError", "SweepError", "ImageReadError"} <= names
    assert len(CLASSES) >= 15


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_error_builds_from_its_message_and_pickles_with_it(cls: type[BaseException]) -> None:
    message = "data.train_hr: folder not found: /somewhere (the real message)"
    required = [
        p for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty and p.name != "self"
    ]  # fmt: skip
    exc = cls(*["field"] * (len(required) - 1), message)  # the message is the last positional argument
    assert message in str(exc)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert message in str(back)


def test_missing_weights_keeps_its_fields_through_pickling(tmp_path) -> None:  # noqa: ANN001
    from csrgan.weights import MissingWeightsError

    exc = MissingWeightsError("gone", filename="f.pth", expected_path=tmp_path / "f.pth", cache_dir=tmp_path)
    back = pickle.loads(pickle.dumps(exc))
    assert (back.filename, back.expected_path, back.cache_dir) == ("f.pth", tmp_path / "f.pth", tmp_path)


def test_preflight_error_keeps_its_problem_list() -> None:
    from csrgan.preflight import PreflightError

    back = pickle.loads(pickle.dumps(PreflightError("2 problems", ["a: x", "b: y"])))
    assert back.problems == ["a: x", "b: y"] and "2 problems" in str(back)


def test_error_headline_finds_the_innermost_exception_line() -> None:
    text = (
        "Failure # 1 (occurred at 2026-12-01_13-00-00)\n"
        "ray::ImplicitFunc.train() (pid=1, ip=127.0.0.2, actor_id=ab)\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 3, in f\n'
        "    raise RuntimeError('outer')\n"
        "RuntimeError: outer\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n"
        '  File "y.py", line 9, in g\n'
        "    load()\n"
        "csrgan.train.degradation.PoorStageError: degradation stage /s is POOR: content lost\n"
        "  second line of the message\n"
    )
    want = "csrgan.train.degradation.PoorStageError: degradation stage /s is POOR: content lost"
    assert error_headline(text) == want
    assert error_headline("ValueError: plain") == "ValueError: plain"
    assert error_headline("") == "(no message)"
