"""A Runge–Kutta pair that hands the flow to a stiff method (RKC or etdrk4) once stability
holds its steps."""
import numpy as np
import tensorflow as tf


class StiffnessSwitching:
    """A Runge–Kutta pair that hands the flow to RKC (or `stiff`) once stability holds its steps.

    Gradient flow is accuracy-limited early, where the pair's higher order pays, and in
    long flows becomes stiff: the Hessian's largest eigenvalue λ holds the pair's dt at its
    stability boundary (dt·λ ≤ 2.51 for Bogacki–Shampine, `Tableau.stability_boundary`) long
    after its mode has decayed, where RKC's s stages are stable up to dt·ρ ≈ 0.65 s².

    Every CHECK_EVERY accepted steps of the pair, the Hessian's spectral radius ρ is
    estimated at the accepted point (`RungeKuttaChebyshev.spectral_radius`, warm from the last
    eigenvector, its evaluations counted); once an accepted step's dt reaches STIFF_RATIO of
    the boundary, dt·ρ ≥ STIFF_RATIO·boundary, the rest of the flow is RKC's, which starts
    from this ρ and eigenvector. (The free estimate from a pair's last two stages, DOPRI5's
    test, Hairer & Wanner, Solving ODEs I, II.10, needs two stages at the same time, which
    Bogacki–Shampine lacks.) The pair takes the flow's output_tol and direction_tol, RKC the
    flow's stiff_output_tol and its own direction_tol (off; `registry.get`).

    The stiff phase may be another method, `stiff` (etdrk4, `exponential`): RKC's power
    iteration still tells when to switch, and the other method takes the rest of the flow
    with its own memory (no more power iterations). It switches at DEFLATED_STIFF_RATIO of
    the boundary: etdrk4 integrates the stiff directions exactly, so no stability bound
    awaits it and the pair's steps, shortened near their boundary, are better left early.

    Its memory is (1 once stiff, accepted pair steps since the last estimate, the pair's
    memory, RKC's, and the other stiff method's if there is one), zero at the start, so a
    resumed run goes on with the method it stopped with.
    """
    STIFF_RATIO = 0.9
    DEFLATED_STIFF_RATIO = 0.5
    CHECK_EVERY = 25

    def __init__(self, pair, rkc, stiff=None):
        self.pair, self.rkc, self.flow = pair, rkc, pair.flow
        self.stiff = stiff
        self.boundary = pair.tableau.stability_boundary
        self.stiff_ratio = self.STIFF_RATIO if stiff is None else self.DEFLATED_STIFF_RATIO

    @property
    def vectors(self):
        """The P-sized vectors it keeps besides Euler's (`run.resources`): the larger of its
        pair's and its stiff phase's (with etdrk4, RKC's eigenvector besides)."""
        stiff = self.rkc.vectors if self.stiff is None else self.stiff.vectors + 1
        return max(self.pair.vectors, stiff)

    def initial_memory(self, point):
        own = () if self.stiff is None else (self.stiff.initial_memory(point),)
        return (tf.zeros((), tf.int64), tf.zeros((), tf.int64), self.pair.initial_memory(point),
                self.rkc.initial_memory(point)) + own

    @tf.autograph.experimental.do_not_convert  # graph control flow is explicit (tf.cond)
    def trial(self, problem, state, dt, memory):
        """The pair's trial step, or RKC's once the flow is stiff, with the measures both
        share (`LocalErrorControl`) and `max_dt` (infinite for the pair)."""
        stiff, since_check, pair_memory, rkc_memory, *own = memory
        own = tuple(own)
        # One power iteration serves both: the pair's check, RKC's re-estimate.
        reestimate = rkc_memory[2] <= 0 if self.stiff is None else tf.constant(False)
        due = tf.where(stiff > 0, reestimate, since_check >= self.CHECK_EVERY)
        rkc_memory, evaluations = self.rkc.estimate(problem, state, rkc_memory, due)
        since_check = tf.where(due, tf.zeros_like(since_check), since_check)

        def by_pair():
            trial = self.pair.trial(problem, state, dt, pair_memory)
            rho = rkc_memory[0]
            held = trial.accepted & (rho > 0) & (
                tf.cast(dt, tf.float64) * rho >= self.stiff_ratio * self.boundary)
            return self._shared(trial, (tf.cast(held, tf.int64),
                                        since_check + tf.cast(trial.accepted, tf.int64),
                                        trial.memory, rkc_memory) + own,
                                tf.constant(np.inf, tf.float64))

        def by_rkc():
            trial = self.rkc.step(problem, state, dt, rkc_memory)
            return self._shared(trial, (stiff, since_check, pair_memory, trial.memory),
                                trial.measures["max_dt"])

        def by_stiff():
            trial = self.stiff.trial(problem, state, dt, own[0])
            return self._shared(trial, (stiff, since_check, pair_memory, rkc_memory,
                                        trial.memory), tf.constant(np.inf, tf.float64))

        trial = tf.cond(stiff > 0, by_rkc if self.stiff is None else by_stiff, by_pair)
        return trial._replace(evaluations=trial.evaluations + evaluations)

    @staticmethod
    def _shared(trial, memory, max_dt):
        keys = ("dout", "dgrad", "error", "output_ratio", "direction_ratio", "normalized_error",
                "previous_error", "after_rejection")
        measures = {key: trial.measures[key] for key in keys}
        measures["max_dt"] = max_dt
        return trial._replace(measures=measures, memory=memory)

    def next_dt(self, dt, accepted, measures):
        return self.pair.next_dt(dt, accepted, measures)
