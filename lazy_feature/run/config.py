"""The configuration of one run at a point (α, h) of the paper's plane, and its stable id."""
import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from lazy_feature.errors import ConfigError
from lazy_feature.flow import adam, auto, registry, training
from lazy_feature.flow.adam import Adam
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.interface import Dynamics
from lazy_feature.flow.momentum import ContinuousMomentum
from lazy_feature.model import activations, architectures, difference, losses, precision

VERSION = "0.3.0"  # the package's one version string (setup.py reads it from here)
# Settings that say where the data lies and how long to try, not what is computed: they are
# left out of the run id, so a run found elsewhere or resumed with more time keeps its id.
# (Adam's `epochs` is not one: it is the length of an Adam run, whose end it changes.)
NOT_IDENTITY = ("data_dir", "max_time", "max_steps", "max_wall_seconds")
# The integrator's settings; an Euler run leaves them out of its id, so runs made before
# there was a choice keep theirs.
INTEGRATOR_SETTINGS = ("integrator", "output_tol", "direction_tol", "stiff_output_tol")
# Settings added after version 0.2.0 enter the run id only away from these values, which
# earlier runs had implicitly, so that their ids stay valid (and a setting whose default is
# another value gives every run at that default a new id).
LATER_SETTINGS = {"architecture": architectures.FC.name, "pca": 0, "pca_whiten": True,
                  "dynamics": training.GRADIENT_FLOW, "batch_size": 32, "learning_rate": None,
                  "tau": 0.0, "tau_proportional_to_t": False, "epochs": None,
                  "stiff_output_tol": None,
                  # runs before it ended at the first accepted point past the criterion
                  "landing_tol": 0.0,
                  # runs before it computed F as α times the difference of f(w) and f(w0)
                  "form": difference.DIRECT}
# The fewest training points a run takes: a class-balanced binary task with fewer says nothing
# about generalization (n_train=1 "converges" with test error 0.5).
MIN_N_TRAIN = 10


def sqrt_h_alpha(alpha: npt.ArrayLike, width: npt.ArrayLike) -> Any:
    """√h·α, the parameter that separates lazy (≫ 1) from feature (≪ 1) training (Section 3).

    Works elementwise on arrays and pandas columns as well as on numbers.
    """
    return np.sqrt(width) * alpha


def alpha_from_sqrt_h_alpha(value: float, width: float) -> float:
    """α = (√h·α)/√h: the α of a point given by √h·α at width h."""
    return value / math.sqrt(width)


# The settings of the flow's steps (eqs. 8-9 and the integrator's tolerances), which Adam has
# no use for.
FLOW_SETTINGS = ("max_dgrad", "max_dout", "dt0", "output_tol", "direction_tol",
                 "stiff_output_tol", "landing_tol")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one run; the defaults are the paper's Section 2 setup.

    α is the article's α (eq. 6): it multiplies f − f0 of a network whose readout carries
    h^(-1/2). bias_scale is the multiplier β_b of the hidden layers' biases (Appendix J; 0 =
    no bias, the paper's main setup; its authors' bias runs use 0.1); readout_bias adds one
    to the readout too, with the same multiplier (fc only). `form` is how F = α[f(w) − f(w0)]
    is computed: "difference" (δ = w − w0 trains and f(w) − f(w0) is propagated through the
    layers without cancellation, `lazy_feature.model.difference`) or "direct" (w trains and
    F is the difference of two outputs); None picks the direct form where its dtype resolves
    F, the difference form beyond (`precision.default_form`). `dtype=None` picks the
    precision the run needs (`precision.default_dtype`: float32 but in the direct form at
    large α).
    architecture is one of `architectures.ARCHITECTURES`: fc (width h, depth L), cnn (the
    paper's CNN, h channels; depth fixed at 4) or wide_resnet (widening factor k as h, depth
    6n + 4); depth None takes the architecture's default (3, 4, 28). pca = K > 0 reduces the
    images to their first K principal components (`data.pca`, whitened if pca_whiten), for
    fc only since they are no longer images.
    The flow's integrator is `integrator`, a name of `lazy_feature.flow.registry`: the paper's
    Euler scheme (eqs. 8-9 with max_dout, max_dgrad, which bound its steps only) or an
    error-controlled one that bounds its local error by output_tol (of α·f, eq. 8's scale) and
    direction_tol (eq. 9's), and, if it switches to a stiff method, that phase's by
    stiff_output_tol; unset tolerances are the integrator's registered defaults. The
    default, AUTO, takes the fastest one shown at Euler's fidelity for the run's network
    and √h·α (`auto.choose`; Euler where none was, for ReLU, or where max_dout or max_dgrad
    is set); `resolved()` names it, and config.json records it and why.
    dynamics is a name of `lazy_feature.flow.training.DYNAMICS`: gradient flow (eq. 7, the
    default), Adam (`lazy_feature.flow.adam`: mini-batches of batch_size, step
    learning_rate, None for lr0·min(1, 1/α); t counts epochs; `epochs` is the run's length:
    it ends at the stopping criterion or after `epochs` epochs, and either is a finished
    run, `runner.finished`) or continuous momentum (`lazy_feature.flow.momentum`: time constant
    tau, or tau·t with tau_proportional_to_t; tau = 0 is gradient flow), stepped by Euler.
    A run ends within landing_tol of the stopping criterion (`GradientFlow.landing_tol`).
    Budgets (max_time in gradient-flow time, max_steps in accepted steps, max_wall_seconds)
    end a run that has not met the stopping criterion; it is then reported not converged.
    """
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    pca: int = 0
    pca_whiten: bool = True
    n_train: int = 10000
    n_test: int = 50000
    data_seed: int = 0
    architecture: str = architectures.FC.name
    width: int = 100
    depth: int | None = None
    activation: str = "softplus"
    activation_beta: float = activations.SOFTPLUS_BETA
    bias_scale: float = 0.0
    readout_bias: bool = False
    alpha: float = 1.0
    centered: bool = True
    init_seed: int = 0
    loss: str = "soft_hinge"
    loss_beta: float = losses.SOFT_HINGE_BETA
    form: str | None = None
    dtype: str | None = None
    max_dgrad: float = 1e-4
    max_dout: float = 0.1
    dt0: float = 1.0
    integrator: str = registry.AUTO
    dynamics: str = training.GRADIENT_FLOW
    batch_size: int = 32
    learning_rate: float | None = None
    epochs: float | None = None
    tau: float = 0.0
    tau_proportional_to_t: bool = False
    output_tol: float | None = None
    direction_tol: float | None = None
    stiff_output_tol: float | None = None
    landing_tol: float = 1e-4
    max_time: float = math.inf
    max_steps: int = 1_000_000
    max_wall_seconds: float = math.inf

    def __post_init__(self) -> None:
        checks = [
            (self.alpha > 0, f"alpha must be > 0, got {self.alpha}"),
            (self.width >= 1, f"width must be >= 1, got {self.width}"),
            (self.n_train >= MIN_N_TRAIN,
             f"n_train={self.n_train} is too small to mean anything: a binary task needs at "
             f"least {MIN_N_TRAIN} training points (both classes); raise --n_train"),
            (self.n_test >= 0, f"n_test must be >= 0, got {self.n_test}"),
            (self.activation in activations.NAMES,
             f"unknown activation {self.activation!r}: choose one of "
             f"{', '.join(activations.NAMES)}"),
            (self.loss in losses.NAMES,
             f"unknown loss {self.loss!r}: choose one of {', '.join(losses.NAMES)}"),
            (self.max_dgrad > 0 and self.max_dout > 0 and self.dt0 > 0,
             "max_dgrad, max_dout and dt0 must be > 0"),
            (self.integrator in (*registry.INTEGRATORS, registry.AUTO),
             f"unknown integrator {self.integrator!r}: choose one of "
             f"{', '.join((*registry.INTEGRATORS, registry.AUTO))}"),
            (all(tol is None or tol > 0
                 for tol in (self.output_tol, self.direction_tol, self.stiff_output_tol)),
             "output_tol, direction_tol and stiff_output_tol must be > 0"),
            (self.dynamics in training.DYNAMICS,
             f"unknown dynamics {self.dynamics!r}: choose one of "
             f"{', '.join(training.DYNAMICS)}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.learning_rate is None or self.learning_rate > 0,
             f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.epochs is None or self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.tau >= 0, f"tau must be >= 0 (0 = gradient flow), got {self.tau}"),
            *self._dynamics_checks(),
            (self.bias_scale >= 0, f"bias_scale must be >= 0 (0 = no bias), got {self.bias_scale}"),
            (not self.readout_bias or self.bias_scale > 0,
             "readout_bias needs bias_scale > 0: the readout's bias enters as bias_scale·b"),
            (self.max_time > 0 and self.max_steps >= 1 and self.max_wall_seconds > 0,
             "max_time, max_steps and max_wall_seconds must be > 0"),
            (self.pca >= 0, f"pca must be >= 0 (0 = no PCA), got {self.pca}"),
            (self.form is None or self.form in difference.FORMS,
             f"unknown form {self.form!r}: choose one of {', '.join(difference.FORMS)}"),
            (self.pca > 0 or self.pca_whiten, "pca_whiten applies with --pca=K only"),
            (self.pca == 0 or not architectures.takes_images(self.architecture),
             f"--pca gives vectors of {self.pca} components, not images: the "
             f"{self.architecture} needs images, use --architecture=fc or drop --pca"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        object.__setattr__(self, "depth", architectures.check_options(
            self.architecture, self.depth, self.bias_scale, self.readout_bias))
        rule_width = precision.resolution_width(self.architecture, self.width)
        if self.form is None:
            object.__setattr__(self, "form", precision.default_form(self.dtype, self.alpha,
                                                                    rule_width))
        object.__setattr__(self, "dtype", precision.check(
            self.dtype, self.alpha, rule_width, network_width=self.width, form=self.form))

    def _dynamics_checks(self) -> list[tuple[bool, str]]:
        """(ok, message) pairs of the settings that belong to one dynamics
        (`training.DYNAMICS`): each refused under the others, and the integrators that may
        step it."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        kind = training.DYNAMICS.get(self.dynamics)
        checks = [(self.dynamics == other.name
                   or all(getattr(self, name) == defaults[name] for name in other.settings),
                   f"{_listed([f'--{name}' for name in other.settings])} are for "
                   f"--dynamics={other.name}, not {self.dynamics}")
                  for other in training.DYNAMICS.values() if other.settings]
        stepped = ", ".join(f"{other.name} steps itself" if not other.flow_steps
                            else f"{other.name} is stepped by {' or '.join(other.integrators)}"
                            for other in training.DYNAMICS.values()
                            if other.integrators is not None)
        return checks + [
            (not self.tau_proportional_to_t or self.tau > 0,
             "tau_proportional_to_t needs tau > 0: the time constant is tau*t"),
            (self.dynamics != training.ADAM or self.batch_size <= self.n_train,
             f"batch_size={self.batch_size} exceeds n_train={self.n_train}: lower --batch_size"),
            (kind is None or kind.integrators is None
             or self.integrator in (registry.AUTO, *kind.integrators),
             f"--dynamics={self.dynamics} takes no --integrator ({stepped}), got "
             f"{self.integrator}"),
            (kind is None or kind.flow_steps or all(getattr(self, name) == defaults[name]
                                                    for name in FLOW_SETTINGS),
             f"--{', --'.join(FLOW_SETTINGS)} set the gradient flow's steps; "
             f"--dynamics={self.dynamics} takes steps of --learning_rate instead: drop them"),
        ]

    def network(self) -> auto.Network:
        """What of this run's network `auto.choose` looks at."""
        return auto.Network(architecture=self.architecture,
                            depth=architectures.check_depth(self.architecture, self.depth),
                            activation=self.activation, activation_beta=self.activation_beta,
                            biased=self.bias_scale > 0, centered=self.centered,
                            kinked=self.activation in activations.KINKED)

    def integrator_choice(self) -> auto.Choice | None:
        """Which integrator AUTO takes for this run and why (config.json's integrator_choice);
        None where the config names one. `auto.choose` for gradient flow; Euler where eq. 8's
        max_dout or eq. 9's max_dgrad is set away from the paper's value, since only Euler's
        steps obey them, and for momentum, which Euler steps (Adam takes no integrator)."""
        if self.integrator != registry.AUTO:
            return None
        if self.dynamics != training.GRADIENT_FLOW:
            return auto.Choice(registry.EULER, f"--dynamics={self.dynamics}: no choice to make")
        if (self.max_dout, self.max_dgrad) != (TrainConfig.max_dout, TrainConfig.max_dgrad):
            return auto.Choice(registry.EULER, "max_dout or max_dgrad set away from the paper's "
                               "value: only Euler's steps obey eqs. 8-9")
        return auto.choose(self.sqrt_h_alpha, self.network())

    def resolved(self) -> "TrainConfig":
        """This config as its run integrates: integrator AUTO replaced by the one chosen for
        it (`integrator_choice`) and unset tolerances by the integrator's registered defaults
        (`registry.tolerances`, `registry.stiff_output_tol`; None for those that take none).
        A config that names them is returned as it is."""
        choice = self.integrator_choice()
        integrator = self.integrator if choice is None else choice.integrator
        output_tol, direction_tol = registry.tolerances(integrator, self.output_tol,
                                                        self.direction_tol)
        stiff = registry.stiff_output_tol(integrator, output_tol, self.stiff_output_tol)
        settings = dict(integrator=integrator, output_tol=output_tol,
                        direction_tol=direction_tol, stiff_output_tol=stiff)
        if all(getattr(self, k) == v for k, v in settings.items()):
            return self
        return dataclasses.replace(self, **settings)

    def flow(self) -> GradientFlow:
        """The `GradientFlow` (thresholds, dt policy, integrator) this run integrates with."""
        config = self.resolved()
        return GradientFlow(max_dout=self.max_dout, max_dgrad=self.max_dgrad, dt0=self.dt0,
                            integrator=config.integrator, output_tol=config.output_tol,
                            direction_tol=config.direction_tol,
                            stiff_output_tol=config.stiff_output_tol,
                            jumps=self.activation in activations.KINKED,
                            landing_tol=self.landing_tol)

    def momentum(self) -> ContinuousMomentum | None:
        """The `ContinuousMomentum` of a momentum run (None for the other dynamics)."""
        if self.dynamics != training.MOMENTUM:
            return None
        return ContinuousMomentum(self.tau, self.tau_proportional_to_t)

    def adam(self) -> Adam | None:
        """The `adam.Adam` of an Adam run (None for the other dynamics): learning_rate, or
        the default rule lr0·min(1, 1/α); its batch order is seeded by init_seed."""
        if self.dynamics != training.ADAM:
            return None
        rate = self.learning_rate or adam.default_learning_rate(self.alpha)
        return adam.Adam(rate, self.batch_size, seed=self.init_seed)

    def make_dynamics(self) -> Dynamics:
        """The `Dynamics` this run is trained by (`training.DYNAMICS`), on its `flow` and
        the settings of its dynamics (`momentum`, `adam`)."""
        own = [settings for settings in (self.momentum(), self.adam()) if settings is not None]
        return training.DYNAMICS[self.dynamics].method(self.flow(), *own)

    @property
    def sqrt_h_alpha(self) -> float:
        """√h·α, the parameter that separates the two regimes (α* ~ h^(-1/2))."""
        return float(sqrt_h_alpha(self.alpha, self.width))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        # (valid JSON stores an infinite budget as "inf", `artifact.jsonable`)
        settings: dict[str, Any] = {k: float(v) if v in ("inf", "-inf") else v
                                    for k, v in d.items()}
        return cls(**settings)

    def run_id(self) -> str:
        """A stable id of the run: a hash of every setting that changes its result.

        It is the id of the `resolved` config: an AUTO integrator counts as the one it
        resolves to. The NOT_IDENTITY settings (data_dir and the budgets) are left out, and so
        are the INTEGRATOR_SETTINGS of an Euler run, and the LATER_SETTINGS at their defaults;
        the architecture's `version` enters once it is not 0.
        """
        resolved = self.resolved()
        d = resolved.to_dict()
        for k in NOT_IDENTITY + (INTEGRATOR_SETTINGS if resolved.integrator == registry.EULER
                                 else ()):
            d.pop(k)
        for k, default in LATER_SETTINGS.items():
            if d.get(k, default) == default:
                d.pop(k, None)
        version = architectures.ARCHITECTURES[resolved.architecture].version
        if version:  # the network's definition changed: another run
            d["architecture_version"] = version
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _listed(items: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
