"""lazy_feature: lazy vs feature training of deep networks (Geiger, Spigler, Jacot, Wyart).

The public face; the modules hold one concept each:
  config        TrainConfig, one run's settings at a point (α, h) and its stable id
  architectures FullyConnected (eqs. 10-14), ConvNet and WideResNet (Section 7, App. A):
                the NTK-parametrized networks f(w, x)
  alpha_model   AlphaModel, F = α[f(w, x) − f(w0, x)] (eq. 6) trained by gradient flow
                (or continuous momentum, or Adam)
  dynamics      GradientFlow, the adaptive step control (eqs. 8-9) and the integrator's
                name; ContinuousMomentum (Section 7, Fig. 13)
  adam          Adam on mini-batches (Table 1), its learning-rate rule across α
  integrators   the paper's Euler scheme, embedded Runge–Kutta pairs and Runge–Kutta–Chebyshev
  exponential   etdrk4: exponential Runge–Kutta with the Hessian's stiff directions deflated
  fidelity      a run against its reference flow (Euler at ε_∇/100, Appendix G)
  distribute    tf.distribute strategies by name, logical CPU devices, the TPU's float32
  run           train / load_run: one run end to end
  artifact      the run artifact on any tf.io.gfile filesystem, its one checkpoint
  resources     the memory and step time a run needs, checked before it starts
  ntk           Gram matrices of the empirical NTK (eq. 5), drift, frozen-kernel dynamics
  regime        RegimeMonitor: lazy or feature learning, for any Keras model's fit
  probe         scan: a user's model's drift and test error over α, its crossover α*
  ensemble      averages over initializations (eqs. 15-16)
  observables   t_{L/2} and the √h·α rescalings
  sweep         grids of runs over the (α, h) plane on Apache Beam
  report        the paper's figures and fitted exponents
"""
from lazy_feature import (activations, adam, artifact, callbacks, data, distribute, ensemble,
                          exponential, exponents, fidelity, integrators, losses, ntk, ntk_eval,
                          observables, precision, probe, regime, report, resources, sweep)
from lazy_feature.alpha_model import AlphaModel
from lazy_feature.architectures import ConvNet, FullyConnected, WideResNet
from lazy_feature.config import VERSION as __version__
from lazy_feature.config import TrainConfig
from lazy_feature.dynamics import ContinuousMomentum, GradientFlow
from lazy_feature.errors import ConfigError, DataError, DivergenceError, Error, RunDirError
from lazy_feature.layers import NTKConv2D, NTKDense
from lazy_feature.ntk import frozen_kernel_dynamics, gram, kernel_drift
from lazy_feature.regime import RegimeMonitor
from lazy_feature.run import load_run, train
from lazy_feature.sweep import SweepConfig, run_sweep
