"""The public API is typed (PEP 484), and mypy agrees with the annotations.

mypy runs with the settings of setup.cfg ([mypy]): it checks the body of every annotated
function, and the modules listed there keep every function annotated. TensorFlow and Keras ship
no type information, so their names are Any to it. The public face is `lazy_feature.__all__`:
its functions and classes are annotated, each class's constructor and the methods it defines
included; a method that overrides a Keras hook (`build`, `compute_output_shape`, ...) may keep
Keras's unannotated signature.
"""
import inspect
import os
import subprocess
import sys

import pytest
from mypy.version import __version__ as MYPY_VERSION  # the test extra installs mypy

import lazy_feature

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_mypy_finds_no_error(tmp_path):
    command = [sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "setup.cfg"),
               "--cache-dir", str(tmp_path / "mypy_cache"), "lazy_feature", "pipelines"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, (f"mypy {MYPY_VERSION} ({' '.join(command[1:])}) failed:\n"
                                    f"{result.stdout}{result.stderr}")


def test_all_names_exist():
    missing = [name for name in lazy_feature.__all__ if not hasattr(lazy_feature, name)]
    assert not missing, f"lazy_feature.__all__ names what the package lacks: {missing}"
    assert len(set(lazy_feature.__all__)) == len(lazy_feature.__all__)


def test_the_study_layer_loads_on_first_use():
    """`import lazy_feature` (what a `train` process starts with) leaves out the study layer
    and its pandas and scipy until a name of it is used."""
    code = ("import sys, lazy_feature; before = 'lazy_feature.study' in sys.modules; "
            "lazy_feature.SweepConfig; print(before, 'lazy_feature.study.sweep' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.split() == ["False", "True"]


def _unannotated(function, returns=True):
    """The parameters of `function` without annotation (self, cls, *args and **kwargs aside),
    and "return" if it returns something unannotated."""
    signature = inspect.signature(function)
    missing = [p.name for p in signature.parameters.values()
               if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if returns and signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def _keras_hook(cls, name):
    """Whether `name` overrides a method of a base class from outside lazy_feature (Keras's)."""
    return any(name in vars(base) for base in cls.__mro__[1:]
               if not base.__module__.startswith("lazy_feature"))


def _methods(cls):
    """{name: function} of the constructor and the public methods and properties `cls` defines."""
    found = {}
    for name, member in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        member = member.fget if isinstance(member, property) else member
        member = getattr(member, "__func__", member)  # classmethod, staticmethod
        if inspect.isfunction(member):
            found[name] = member
    return found


PUBLIC = sorted(name for name in lazy_feature.__all__
                if inspect.isfunction(getattr(lazy_feature, name))
                or inspect.isclass(getattr(lazy_feature, name)))


def test_the_public_face_has_functions_and_classes():
    assert {"train", "load_run", "TrainConfig", "AlphaModel", "RegimeMonitor",
            "run_sweep"} <= set(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_signatures_are_annotated(name):
    value = getattr(lazy_feature, name)
    if inspect.isfunction(value):
        missing = {name: _unannotated(value)}
    else:
        missing = {f"{name}.{method}": _unannotated(function, returns=method != "__init__")
                   for method, function in _methods(value).items()
                   if method == "__init__" or not _keras_hook(value, method)}
    missing = {where: names for where, names in missing.items() if names}
    assert not missing, f"unannotated (PEP 484): {missing}"
