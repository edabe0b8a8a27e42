"""lazy_feature: lazy vs feature training of deep networks (Geiger, Spigler, Jacot, Wyart).

The public face. The subpackages are the layers of the library, each importing only those
listed before it:
  model   the networks f(w, x) in NTK parametrization (eqs. 10-14, Section 7), their
          activations, layers, losses (eq. 7), precision policy and the centered α-model
          F = α[f(w, x) − f(w0, x)] (eq. 6)
  flow    the dynamics that train it: adaptive gradient flow (eqs. 8-9) and its integrators,
          continuous momentum, Adam
  kernel  the empirical NTK (eq. 5), its drift and the frozen-kernel dynamics
  run     one run: its config and id, data, artifact directory, training, callbacks,
          devices, resources
  probe   RegimeMonitor and the α scan for any Keras model
  study   ensembles (eqs. 15-16), observables, sweeps, fits, claims, figures, the report
"""
import importlib
from typing import TYPE_CHECKING, Any

from lazy_feature import errors
from lazy_feature.errors import ConfigError, DataError, DivergenceError, Error, RunDirError
from lazy_feature.flow import adam, dynamics, exponential, integrators, registry, training
from lazy_feature.flow.adam import AdamDynamics
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.momentum import ContinuousMomentum, MomentumDynamics
from lazy_feature.flow.network_flow import GradientFlowDynamics
from lazy_feature.kernel import drift, frozen, ntk
from lazy_feature.kernel.drift import kernel_drift
from lazy_feature.kernel.frozen import frozen_kernel_dynamics
from lazy_feature.kernel.ntk import gram
from lazy_feature.model import activations, losses, precision
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.model.architectures import ConvNet, FullyConnected, WideResNet
from lazy_feature.model.layers import NTKConv2D, NTKDense
from lazy_feature.probe import regime
from lazy_feature.probe.regime import RegimeMonitor
from lazy_feature.run import artifact, callbacks, data, distribute, resources
from lazy_feature.run.config import VERSION as __version__, TrainConfig
from lazy_feature.run.runner import load_run, train

if TYPE_CHECKING:
    from lazy_feature.study import (ensemble, exponents, fidelity, ntk_eval, observables,
                                    report, sweep)
    from lazy_feature.study.sweep import SweepConfig, run_sweep

# The study layer is imported on first use (PEP 562): pandas and scipy, which only it needs,
# would slow every `train` process's start (benchmarks/results/first_step.md).
_STUDY: dict[str, tuple[str, str | None]] = {
    name: (f"lazy_feature.study.{name}", None) for name in (
        "ensemble", "exponents", "fidelity", "ntk_eval", "observables", "report", "sweep")}
_STUDY.update(study=("lazy_feature.study", None),
              SweepConfig=("lazy_feature.study.sweep", "SweepConfig"),
              run_sweep=("lazy_feature.study.sweep", "run_sweep"))


def __getattr__(name: str) -> Any:
    if name not in _STUDY:
        raise AttributeError(f"module 'lazy_feature' has no attribute {name!r}")
    module_name, attribute = _STUDY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)

# The public names, typed (PEP 484; tests/test_types.py checks them): the layers' subpackages,
# their modules a user reaches for, and the classes and functions above.
__all__ = [
    # the layers
    "model", "flow", "kernel", "run", "probe", "study",
    # errors
    "errors", "Error", "ConfigError", "DataError", "DivergenceError", "RunDirError",
    # model
    "activations", "losses", "precision", "AlphaModel", "FullyConnected", "ConvNet",
    "WideResNet", "NTKDense", "NTKConv2D",
    # flow
    "adam", "dynamics", "exponential", "integrators", "registry", "training", "GradientFlow",
    "GradientFlowDynamics", "ContinuousMomentum", "MomentumDynamics", "AdamDynamics",
    # kernel
    "drift", "frozen", "ntk", "gram", "kernel_drift", "frozen_kernel_dynamics",
    # run
    "artifact", "callbacks", "data", "distribute", "resources", "TrainConfig", "train",
    "load_run",
    # probe
    "regime", "RegimeMonitor",
    # study
    "ensemble", "exponents", "fidelity", "ntk_eval", "observables", "report", "sweep",
    "SweepConfig", "run_sweep",
]
