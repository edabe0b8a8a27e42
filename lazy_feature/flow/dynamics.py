"""Step-size control of the adaptive discretization of gradient flow (eqs. 8-9).

A step w_{i+1} = w_i − dt ∇L_i is accepted only if
  eq. 8:  α max_μ |f(w_i, x_μ) − f(w_{i+1}, x_μ)| < max_dout   (0.1 in the paper),
  eq. 9:  ‖∇L_i − ∇L_{i+1}‖² / (‖∇L_i‖ ‖∇L_{i+1}‖) < max_dgrad (ε_∇ = 1e-4).
A rejected step leaves w_i as it was and shrinks dt; a step well inside both bounds grows
dt. That is the paper's Euler scheme; `integrator` names a higher-order alternative
(`integrators`: embedded Runge–Kutta pairs whose local error is controlled in the same
quantities, eq. 8's α·f and eq. 9's gradient, by `output_tol` and `direction_tol`). The same
control drives the network (`AlphaModel`) and the frozen-kernel dynamics, so both integrate
the same flow with the same fidelity. Time t = Σ dt is the gradient-flow time of eq. 7's loss.

Jumps of ∇L (ReLU). Where w ↦ ∇L is smooth, eq. 9's left side falls as dt² when dt shrinks.
A ReLU network's ∇L is discontinuous where a hidden pre-activation of a training point
crosses zero (Appendix F: w ↦ f(w, x_μ) is differentiable on patches only), and a step across
such a kink changes ∇L by a finite jump, whatever dt. Where the jump exceeds ε_∇, eq. 9
rejects every step that reaches the kink, dt falls without bound and t stops (measured at L =
5, √h·α = 1e-2 on Fashion-MNIST: n = 500, h = 100 stalls at t = 0.0117, a jump of 1.009e-4
rejecting every step that reaches the kink, 5e-12 in dt; n = 2 000 at t ≈ 0.013; a larger
ε_∇ = 1e-2 stalls too, at t = 0.0155). Where the flow slides along kinks (the gradients on
either side push towards them), every step crosses them back and forth, by the same discrete
jumps (5.7e-3, 1.4e-2, 2.0e-2 at n = 30, h = 8, whatever dt).
With `jumps`, the Euler integrator takes ∇L at the half step of a trial that eq. 9 alone
rejects, and eq. 9's left side over each half, d₁ and d₂: where ∇L is smooth both are about
d/4 (and about c·(dt/2)², c = d/dt² of the last step whose smooth change was measured), while
a jump stays whole in the half that holds it, whatever dt. A half whose d exceeds the
other's JUMP_RATIO times holds a jump, and 4·min(d₁, d₂) is the step's smooth change; halves
that both exceed JUMP_RATIO·c·(dt/2)² both hold jumps (where the flow slides along several
kinks at once, every step crosses some in each half), and c·dt² is the smooth change. Eq. 9
judges that smooth change, which also sets the next dt (up to JUMP_GROWTH times this one).
So the flow crosses kinks as gradient flow does and slides along them at the dt eq. 9 gives
its smooth part. A smooth flow is judged by eq. 9 as before unless its change grows a
hundredfold (JUMP_RATIO) within one step: the steepest rise measured, at the start of a
frozen-kernel flow, is twentyfold from one whole step to the next, and that flow takes the
same 665 steps with or without `jumps`. It costs one more gradient evaluation per trial eq.
9 rejects (per trial under a strategy with several replicas, where the evaluation cannot sit
in a branch). Measured on ReLU nets with L = 5 (n = 30-60, h = 8-16, float64): every run of
five that stalled converges, at 0.8-1.5% from the reference flow (`fidelity`, ε_∇/100, itself
crossing jumps so) at √h·α = 1e-2 and 0.14% at 1, where softplus nets are within 0.03%:
Euler's error at each crossing is first order. The test errors were the reference's.
"""
import dataclasses

import tensorflow as tf

from lazy_feature.errors import ConfigError

# The integrators of `integrators`: the paper's Euler scheme, Bogacki–Shampine 3(2),
# Dormand–Prince 5(4), Runge–Kutta–Chebyshev (second order, stabilized), each pair
# switching to RKC once stability holds its steps (`integrators.StiffnessSwitching`), and
# fourth-order exponential Runge–Kutta on the Hessian's top eigenspace (`exponential`).
INTEGRATORS = ("euler", "bogacki_shampine", "dormand_prince", "rkc", "bogacki_shampine_rkc",
               "dormand_prince_rkc", "etdrk4", "bogacki_shampine_etdrk4")
# Those that switch to rkc (or etdrk4) once stiff, whose stiff phase has its own output_tol
# (`GradientFlow.stiff_output_tol`).
SWITCHING = ("bogacki_shampine_rkc", "dormand_prince_rkc", "bogacki_shampine_etdrk4")
# An integrator name that `TrainConfig` resolves per run (`choose_integrator`): its default.
AUTO = "auto"
# Each error-controlled integrator's (output_tol, direction_tol) where none are given: about
# the loosest whose runs stay as close to the reference flow as the paper's Euler scheme's,
# where `choose_integrator` takes it (its docstring gives the measurements). RKC's error is
# held by α·f's alone (at √h·α = 1e4 a direction_tol of 3e-2 or 1e3 gave the same run), so
# its direction_tol is off; the pairs' is not (at 1e-4, Bogacki–Shampine without it
# deviates 15 times more than Euler).
# bogacki_shampine_rkc's pair is held twice tighter than plain bogacki_shampine: at 1e-3/1e-2
# it deviated more than Euler at n = 2 000, seed 2, √h·α = 1e-2 (1.2e-3 against 6.1e-4, as
# did plain bogacki_shampine, 1.1e-3), at 5e-4/5e-3 4.8e-4 (README).
# rkc's 1e-2 holds Euler's fidelity at n = 500 and 2 000 but not at n = 10 000, √h·α = 1e3
# (8.3e-5 against Euler's 6.3e-5, README), where 6.6e-3 does (6.27e-5, ×0.18 of Euler's
# evaluations) but takes ×0.35 instead of ×0.33 at n = 2 000, √h·α = 1e4.
# etdrk4's 3e-3 (its estimate scaled by exponential.DeflatedExponential.ESTIMATE_WEIGHT): at
# 1e-2 it deviated more than Euler at n = 2 000, √h·α = 1e4, seed 2 (2.7e-4 against 2.4e-4),
# on the tests' small network and (a prototype, after the pair's phase) at n = 500, √h·α = 1
# and 1e-2; at 3e-3 it deviates 0.21-0.27 of Euler's at n = 2 000 (×0.18 of its
# evaluations) and 0.21 at n = 10 000, √h·α = 1e3 (×0.093).
# bogacki_shampine_etdrk4's pair as bogacki_shampine_rkc's, its etdrk4 phase at etdrk4's 3e-3
# (EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR): at n = 2 000, seeds 0-2, it deviates at most 0.32 of
# Euler's at √h·α = 1 and 0.69 at 1e-2 (seed 2), 0.42 and 0.41 at n = 500, 0.47 at
# n = 10 000, √h·α = 1e-2. At 4e-3 (a factor 8, the basis then refreshed every 15 steps) it
# took ×0.337 of Euler's evaluations at √h·α = 1 against ×0.342, and ×0.29 at 1e-2 as at
# 3e-3 (n = 2 000, seeds 0-2): looser buys little, the pair's phase, the power iterations
# and the basis weighing as much as before.
TOLERANCES = {"bogacki_shampine": (1e-3, 1e-2), "dormand_prince": (1e-3, 1e-2),
              "rkc": (1e-2, 1e3), "bogacki_shampine_rkc": (5e-4, 5e-3),
              "dormand_prince_rkc": (1e-3, 1e-2), "etdrk4": (3e-3, 1e3),
              "bogacki_shampine_etdrk4": (5e-4, 5e-3)}
# The RKC phase of a pair that switches to it (bogacki_shampine_rkc, dormand_prince_rkc,
# `integrators.StiffnessSwitching`) bounds the local error of α·f by this many times the
# pair's output_tol (`GradientFlow.stiff_output_tol`, which a run's config.json records),
# with RKC's direction_tol (off). Errors made early, where the flow is fast (and in the
# feature regime amplifies them), weigh on the final outputs more than those of the stiff
# late phase, where it contracts towards the margins. Measured at n = 2 000, h = 100, seeds
# 0-2, the pair at its TOLERANCES, 5e-4/5e-3 (evaluations summed over the seeds relative to
# Euler's; the largest ratio of a seed's deviation from the reference flow to Euler's):
#   factor   √h·α = 1        1e-2
#   10       ×0.42, 0.20     ×0.38, 0.78
#   20       ×0.38, 0.28     ×0.35, 0.81
#   40       ×0.36, 0.38     ×0.33, 1.01   (seed 2: 6.17e-4 against Euler's 6.10e-4)
# (dormand_prince_rkc at 5e-4/5e-3 and 20: ×0.40, 0.37 and ×0.36, 0.46.) 20 is the cheapest
# with every seed below Euler; at n = 500, h = 64, seed 0 it took ×0.27 (deviation 8.8e-5) at
# √h·α = 1 and ×0.24 (2.5e-4) at 1e-2, Euler deviating 3.3e-4 and 5.1e-4. Loosening buys
# little: where accuracy holds RKC's dt (local error ∝ dt³) a step costs s ∝ √(dt·ρ) stages,
# so the RKC phase's evaluations per unit of t go as √(ρ/dt) ∝ output_tol^(-1/6). Earlier,
# at seed 0 with the pair at 1e-3/1e-2: factor 1 ×0.52 and ×0.50, 100 ×0.28 and ×0.26
# (above Euler's deviation at 1e-2); 30 deviated more than Euler at n = 500, h = 64, √h·α =
# 1 (4.9e-4 against 3.3e-4).
STIFF_OUTPUT_TOL_FACTOR = 20.0
# The same for a pair that switches to etdrk4 (bogacki_shampine_etdrk4): its stiff phase at
# 3e-3 for the pair's 5e-4, etdrk4's own tolerance (TOLERANCES).
EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR = 6.0
# `choose_integrator`'s bounds in √h·α: dormand_prince below the first,
# bogacki_shampine_etdrk4 up to the second, etdrk4 from it on.
DORMAND_PRINCE_BELOW_SQRT_H_ALPHA = 1e-2
EXPONENTIAL_FROM_SQRT_H_ALPHA = 10.0
# How many times one half of a step's change of ∇L must exceed the other's to count as a
# jump (`jumps` above).
JUMP_RATIO = 100.0
# The most dt grows after a step accepted across a jump (`integrators.Euler.next_dt`).
JUMP_GROWTH = 2.0


@dataclasses.dataclass(frozen=True)
class GradientFlow:
    """Thresholds and dt policy of the adaptive gradient flow, and its integrator.

    Attributes:
      max_dout: the bound of eq. 8 on α·max|Δf| over the training set in one step.
      max_dgrad: ε_∇, the bound of eq. 9 on the relative change of the gradient.
      dt0: the first time step tried.
      grow: dt is multiplied by this after a step inside `well_inside` of both bounds.
      shrink: dt is multiplied by this after a rejected step.
      well_inside: the fraction of each bound below which a step counts as easy.
      integrator: one of INTEGRATORS; "euler" is the paper's scheme (eqs. 8-9 and the dt
        policy above), "bogacki_shampine" and "dormand_prince" Runge–Kutta pairs
        (`integrators.EmbeddedRungeKutta`), which use dt0 and set dt from their error
        estimate (a PI controller), "rkc" the stabilized Runge–Kutta–Chebyshev method
        (`integrators.RungeKuttaChebyshev`), which uses dt0 and sets dt from its error
        estimate and its stages from the Hessian's spectral radius; "bogacki_shampine_rkc"
        and "dormand_prince_rkc" the pair until stability holds its steps, then RKC
        (`integrators.StiffnessSwitching`); "etdrk4" exponential Runge–Kutta with the
        Hessian's few stiff directions integrated exactly (`exponential`), which uses dt0
        and sets dt from its error estimate; "bogacki_shampine_etdrk4" the pair, then etdrk4.
      jumps: the euler integrator accepts a step across a jump of ∇L (module docstring);
        `TrainConfig.flow` sets it for networks whose activation has a kink (ReLU).
      output_tol: a Runge–Kutta (or RKC) step's bound on the local error of α·f at the training
        points (absolute, eq. 8's scale); None: the integrator's TOLERANCES.
      direction_tol: a Runge–Kutta step's bound on the relative local error of its mean
        gradient ‖Δw − Δŵ‖/‖Δw‖ (eq. 9's scale); None: the integrator's TOLERANCES.
      stiff_output_tol: a SWITCHING integrator's output_tol once it is RKC's or etdrk4's
        (with their direction_tol, off); None: STIFF_OUTPUT_TOL_FACTOR (for etdrk4
        EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR) times output_tol. Other integrators have none
        (it resolves to None).
    """
    max_dout: float = 0.1
    max_dgrad: float = 1e-4
    dt0: float = 1.0
    grow: float = 1.1
    shrink: float = 0.5
    well_inside: float = 0.5
    integrator: str = "euler"
    output_tol: float | None = None
    direction_tol: float | None = None
    stiff_output_tol: float | None = None
    jumps: bool = False

    def __post_init__(self):
        if not (self.max_dout > 0 and self.max_dgrad > 0 and self.dt0 > 0):
            raise ConfigError("max_dout, max_dgrad and dt0 must be > 0")
        if self.integrator not in INTEGRATORS:
            raise ConfigError(f"unknown integrator {self.integrator!r}: choose one of "
                              f"{', '.join(INTEGRATORS)}")
        output_tol, direction_tol = tolerances(self.integrator, self.output_tol,
                                               self.direction_tol)
        object.__setattr__(self, "output_tol", output_tol)
        object.__setattr__(self, "direction_tol", direction_tol)
        object.__setattr__(self, "stiff_output_tol", stiff_output_tol(
            self.integrator, self.output_tol, self.stiff_output_tol))
        if not all(tol is None or tol > 0
                   for tol in (self.output_tol, self.direction_tol, self.stiff_output_tol)):
            raise ConfigError("output_tol, direction_tol and stiff_output_tol must be > 0")
        if not (0 < self.shrink < 1 <= self.grow and 0 < self.well_inside <= 1):
            raise ConfigError("need 0 < shrink < 1 <= grow and 0 < well_inside <= 1")

    def accept(self, dout, dgrad):
        """Whether a trial step obeys eqs. 8 and 9 (NaN or inf never does)."""
        return tf.logical_and(dout < self.max_dout, dgrad < self.max_dgrad)

    def next_dt(self, dt, accepted, dout, dgrad):
        """The next time step: shrunk after a rejection, grown after an easy step."""
        easy = tf.logical_and(dout < self.well_inside * self.max_dout,
                              dgrad < self.well_inside * self.max_dgrad)
        grown = tf.where(easy, dt * self.grow, dt)
        return tf.where(accepted, grown, dt * self.shrink)


def tolerances(integrator, output_tol=None, direction_tol=None):
    """(output_tol, direction_tol) of `integrator`: those given, the unset ones (None) from
    its TOLERANCES (None for euler, which takes none)."""
    defaults = TOLERANCES.get(integrator, (None, None))
    return tuple(default if given is None else given
                 for given, default in zip((output_tol, direction_tol), defaults))


def stiff_of(integrator):
    """The method a SWITCHING integrator ("<pair>_<stiff>") hands the stiff flow to: "rkc"
    or "etdrk4"; None for the others."""
    if integrator not in SWITCHING:
        return None
    return "etdrk4" if integrator.endswith("_etdrk4") else "rkc"


def pair_of(integrator):
    """The Runge–Kutta pair a SWITCHING integrator ("<pair>_<stiff>") starts with; any other
    integrator is its own."""
    stiff = stiff_of(integrator)
    return integrator.removesuffix(f"_{stiff}") if stiff else integrator


def stiff_output_tol(integrator, output_tol, given=None):
    """The output_tol of a SWITCHING integrator's stiff phase: `given`, or
    STIFF_OUTPUT_TOL_FACTOR (EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR for etdrk4's) times its
    (resolved) output_tol; None for the other integrators, which have no such phase."""
    if integrator not in SWITCHING:
        return None
    factor = (EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR if stiff_of(integrator) == "etdrk4"
              else STIFF_OUTPUT_TOL_FACTOR)
    return factor * output_tol if given is None else given


def choose_integrator(sqrt_h_alpha, kinked=False):
    """The integrator `TrainConfig`'s AUTO takes for a gradient-flow run at √h·α: the one that
    reaches the paper Euler scheme's fidelity to gradient flow in the fewest gradient
    evaluations, at its TOLERANCES.

    etdrk4 from EXPONENTIAL_FROM_SQRT_H_ALPHA on, where the stiff modes of the kernel (eq. 28,
    over t ~ 10³-10⁴) hold an explicit pair's steps by stability nearly from the start (a pair
    then takes as many evaluations as Euler), and its few stiff directions, integrated
    exactly, let a fourth order take long steps (RKC pays √(dt·ρ) stages a step for them:
    at n = 2 000 it takes ×0.33 of Euler's evaluations at √h·α = 1e4, etdrk4 ×0.19, and
    the gap grows with n); bogacki_shampine_etdrk4 below, where accuracy holds the
    early steps and stability the late ones from a t that moves with n (at n = 500, √h·α = 1,
    plain bogacki_shampine takes ×0.36 of Euler's evaluations; at n = 2 000, ×0.98: the
    switch to the stiff method finds that t). Switching to etdrk4 rather than RKC takes 9-12%
    more evaluations at n = 500 (below) but 14-19% fewer at n = 2 000 and 34% fewer at
    n = 10 000, √h·α = 1e-2 (README), where runs are long: the stiff phase grows with n.
    dormand_prince below DORMAND_PRINCE_BELOW_SQRT_H_ALPHA, where
    f grows to ~1/α and the flow amplifies early errors (Euler itself deviates 3e-3 at 1e-4),
    which a fifth order follows more cheaply. euler for a `kinked` activation (ReLU), whose
    jumps of ∇L only Euler's jump rule crosses.

    Measured (`benchmarks/flow_benchmark.py`, L = 3, float64, seed 0; deviation ‖F −
    F_ref‖/‖F_ref‖ of 2 000 test outputs from a Dormand–Prince reference at tolerances
    1e-8/1e-7, at Euler's final t; evaluations relative to Euler's). n = 500, h = 64:
      √h·α   euler          chosen                   bogacki_shampine   rkc
      1e-4   3 966, 2.9e-3  dormand_prince           ×0.46, 4.1e-3      ×0.30, 6.7e-2
                            ×0.50, 5.8e-4
      1e-3   2 862, 1.7e-3  dormand_prince           ×0.25, 2.2e-3
                            ×0.34, 6.5e-4
      1e-2   2 181, 5.1e-4  bogacki_shampine_etdrk4  ×0.26, 3.7e-4      ×0.21, 7.4e-3
                            ×0.27, 2.1e-4
                            (bogacki_shampine_rkc ×0.24, 2.5e-4)
      1      1 503, 3.3e-4  bogacki_shampine_etdrk4  ×0.36, 3.0e-5      ×0.22, 1.2e-3
                            ×0.29, 1.4e-4
                            (bogacki_shampine_rkc ×0.27, 8.8e-5)
      10     1 470, 4.2e-4  etdrk4                   ×0.58, 5.7e-5      ×0.31, 4.0e-4
                            ×0.33, 1.0e-4
                            (bogacki_shampine_rkc at 1e-3/1e-2 ×0.32, 2.7e-4)
      1e2    1 478, 3.9e-4  etdrk4                   ×0.99, 6.3e-5      ×0.38, 3.5e-4
                            ×0.33, 6.8e-5
      1e4    1 501, 3.8e-4  etdrk4                   (as at 1e6)        ×0.38, 2.9e-4
                            ×0.33, 6.3e-5
      1e6    1 501, 3.8e-4  etdrk4                   ×1.00, 2.5e-5      ×0.38, 2.9e-4
                            ×0.32, 2.0e-4
    The README has the n = 2 000 benchmark, where plain bogacki_shampine takes ×0.98 and
    ×0.83 of Euler's evaluations at √h·α = 1 and 1e-2 (seed 0), bogacki_shampine_rkc ×0.38
    and ×0.35 and bogacki_shampine_etdrk4 ×0.33 and ×0.28 (seeds 0-2).
    dormand_prince_rkc (its RKC phase then at the pair's tolerance) deviated 7.4e-4 at
    √h·α = 1, n = 500, more than Euler: not chosen.
    """
    if kinked:
        return "euler"
    if sqrt_h_alpha >= EXPONENTIAL_FROM_SQRT_H_ALPHA:
        return "etdrk4"
    if sqrt_h_alpha < DORMAND_PRINCE_BELOW_SQRT_H_ALPHA:
        return "dormand_prince"
    return "bogacki_shampine_etdrk4"


def gradient_change(squared_difference, norm_old_sq, norm_new_sq):
    """The left side of eq. 9 from ‖∇L_i − ∇L_{i+1}‖², ‖∇L_i‖² and ‖∇L_{i+1}‖².

    Zero when both gradients vanish (nothing left to learn), so such a step is accepted.
    """
    return tf.math.divide_no_nan(squared_difference, tf.sqrt(norm_old_sq * norm_new_sq))


@dataclasses.dataclass(frozen=True)
class ContinuousMomentum:
    """Continuous momentum (Section 7, Figs. 7 (c) and 13): τ v̇ = −v − ∇L, ẇ = v.

    The authors' definition (github.com/mariogeiger/feature_lazy, dynamics.py,
    `ContinuousMomentum`: "d/dt velocity = −1/tau (velocity + grad), d/dt parameters =
    velocity", or −μ/t (velocity + grad)), with the time constant τ = `tau`, or τ = tau·t
    when `proportional_to_t` (their μ = 1/tau, the EMNIST setup of Fig. 7 (c)). v starts at 0.
    τ = 0 is gradient flow (v = −∇L at once).

    Stepped as the authors do: over a step dt with ∇L frozen at the accepted point, v is
    integrated exactly, v ← x v − (1 − x) ∇L with x = `decay(t, dt)`, then w ← w + dt v. At
    τ = 0 (x = 0) this is the Euler step w − dt ∇L of gradient flow, bit for bit; as τ → 0
    it tends to it. The step's only errors come from ∇L changing along it and from w moving
    with the step's final v; eqs. 8 and 9 bound exactly these (α max|Δf| over the step, the
    relative change of ∇L between accepted points), so the paper's accept rule carries over
    to the augmented state (w, v) unchanged, and t = Σ dt is the time of this ODE.
    """
    tau: float = 0.0
    proportional_to_t: bool = False

    def __post_init__(self):
        if not self.tau >= 0:
            raise ConfigError(f"tau must be >= 0 (0 = gradient flow), got {self.tau}")

    def decay(self, t, dt):
        """x = exp(−dt/τ) for a constant τ, (t/(t + dt))^(1/tau) for τ = tau·t (float64);
        0 when τ = 0."""
        if self.tau == 0:
            return tf.constant(0.0, tf.float64)
        t, dt = _float64(t), _float64(dt)
        if self.proportional_to_t:
            return tf.pow(t / (t + dt), 1.0 / self.tau)
        return tf.exp(-dt / self.tau)


def _float64(value):
    """A number or tensor as a float64 tensor (a Python float is never rounded to float32)."""
    return tf.cast(value, tf.float64) if hasattr(value, "dtype") else tf.constant(value,
                                                                                  tf.float64)
