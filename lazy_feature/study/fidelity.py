"""How faithfully a run integrates gradient flow: its distance to a reference flow (Appendix G).

Appendix G checks the paper's Euler scheme by dividing ε_∇ by 100 and finding that the outputs
move by less than 1e-3 relative. The reference flow makes that check a yardstick for any run
and any integrator: Euler (eqs. 8-9) with ε_∇/100 and max_dout/10, in float64, from the same
w0 on the same data (`reference_config`). A run is compared with it where it reports, at its
own stop (the stopping criterion, every margin > 1, located within `landing_tol` by both),
and, to separate the integration error from where the run stopped, at a common gradient-flow
time, the run's final t, on which the reference lands a step exactly (`AlphaModel.t_end`):
  output_deviation           ‖F − F_ref‖/‖F_ref‖ on the test set, each at its own stop;
  output_deviation_common_t  ‖F(t) − F_ref(t)‖/‖F_ref(t)‖ at the run's final t;
  test_error_difference      the run's test error − the reference's, at convergence;
  t_difference               the run's t − the reference's, at convergence.
The reference itself deviates from the exact flow by ~3e-5 on the paper's setup, so smaller
deviations are not resolved. It costs about 10-30 runs of the paper's scheme.
"""
import dataclasses
import logging
import math
import time

import numpy as np

from lazy_feature.errors import ConfigError, DivergenceError
from lazy_feature.flow import registry, training
from lazy_feature.run import artifact, callbacks, runner

logger = logging.getLogger("lazy_feature")

REFERENCE_DGRAD_FACTOR = 100  # ε_∇ / 100, as in Appendix G
REFERENCE_DOUT_FACTOR = 10  # max_dout / 10
# The reference stops within 1e-6 of the criterion: its own stop errs by ~1e-7 relative in F,
# far below the deviations compared with it.
REFERENCE_LANDING_TOL = 1e-6


def reference_config(config):
    """The reference flow's TrainConfig: `config` with the paper's Euler scheme at ε_∇/100 and
    max_dout/10, in float64 (which resolves every α), stopping within REFERENCE_LANDING_TOL.
    An Adam run has no flow to refine."""
    if not training.DYNAMICS[config.dynamics].flow_steps:
        raise ConfigError(f"an {config.dynamics} run is a sequence of "
                          f"{config.dynamics.capitalize()} steps, not an integrated flow: it "
                          "has no reference flow to compare with")
    return dataclasses.replace(config, integrator=registry.EULER, dtype="float64",
                               max_dgrad=config.max_dgrad / REFERENCE_DGRAD_FACTOR,
                               max_dout=config.max_dout / REFERENCE_DOUT_FACTOR,
                               landing_tol=REFERENCE_LANDING_TOL)


@dataclasses.dataclass
class Reference:
    """A reference flow: its convergence and its test outputs at the times asked for.

    t, test_outputs, test_error: at convergence (the first accepted point with every
    training margin > 1). outputs_at: {time: F on the test set at exactly that t}.
    steps, gradient_evaluations, rejected_steps: the whole integration, past convergence if
    a time asked lies beyond it.
    """
    t: float
    test_outputs: np.ndarray
    test_error: float
    outputs_at: dict
    steps: int
    gradient_evaluations: int
    rejected_steps: int


def reference_flow(config, task, times=(), reference=None):
    """Integrate `config`'s reference flow on `task` to convergence and to each of `times`.

    reference: the reference's TrainConfig, `reference_config(config)` if None (another
    integrator at tight tolerances can stand in for it where the Euler reference is too
    costly, `benchmarks/flow_benchmark.py`).
    Raises DivergenceError if a budget of `config` (max_steps, max_time, max_wall_seconds)
    stops it first.
    """
    reference = reference_config(config) if reference is None else reference
    model = runner.build_model(reference, task.x_train.shape[1:])
    model.start(task.x_train, task.y_train)
    converged, outputs_at = None, {}

    def advance(until, stop_when_converged):
        model.t_end.assign(until)
        stopping = callbacks.GradientFlowStopping(
            min(until, reference.max_time), reference.max_steps, reference.max_wall_seconds,
            stop_when_converged=stop_when_converged)
        runner.fit_flow(model, task.x_train, task.y_train, [stopping])
        if stopping.reason not in ("converged", "max_time") or (
                stopping.reason == "max_time" and model.t.numpy() < until):
            raise DivergenceError(f"the reference flow stopped at t={float(model.t.numpy()):.4g} "
                                  f"({stopping.reason}): raise the budgets of its config")
        return stopping.reason

    def test_outputs():
        return runner.evaluate(model, task.x_test, task.y_test, model.per_pattern_loss)[:2]

    for until in sorted(set(times)) + [math.inf]:
        if converged is None and advance(until, True) == "converged":
            converged = float(model.t.numpy()), *test_outputs()
        if until < math.inf:
            if model.t.numpy() < until:
                advance(until, False)
            outputs_at[until], error = test_outputs()
            if converged is None and bool(model.converged()):  # converged on landing
                converged = until, outputs_at[until], error
    t, outputs, error = converged
    steps = int(model.step_count.numpy())
    return Reference(t, outputs, error, outputs_at, steps, int(model.evaluations.numpy()),
                     int(model.attempts.numpy()) - steps)


def compare(test_outputs, t, test_error, reference):
    """The fidelity of a flow that ended at time t with these test outputs and error (module
    docstring); `reference` must hold its outputs at t (`reference_flow(..., times=[t])`)."""
    def deviation(F_ref):
        return float(np.linalg.norm(np.asarray(test_outputs) - F_ref) / np.linalg.norm(F_ref))
    return dict(output_deviation=deviation(reference.test_outputs),
                output_deviation_common_t=deviation(reference.outputs_at[t]),
                test_error_difference=float(test_error - reference.test_error),
                t_difference=float(t - reference.t), reference_t=reference.t,
                reference_test_error=reference.test_error,
                reference_gradient_evaluations=reference.gradient_evaluations)


def check_runs(run_dirs, task=None):
    """Compare each complete run in `run_dirs` with its reference flow; write `fidelity.json`
    (`compare`'s fields and reference_wall_seconds, the reference flow's wall time).

    Runs that share a reference (the same reference_config: the same data, w0 and
    thresholds, whatever their integrator or dtype) are compared with one reference flow
    that lands on each of their final t. A run that already has fidelity.json is not checked
    again. task: the runs' data set (loaded from each config if None). Returns the results
    in the order of `run_dirs`.
    """
    results, groups = {}, {}
    for run_dir in run_dirs:
        path = artifact.join(run_dir, artifact.FIDELITY)
        if artifact.exists(path):
            results[run_dir] = artifact.read_json(path)
            continue
        loaded = runner.load_run(run_dir, task)
        key = reference_config(loaded.config).run_id()
        groups.setdefault(key, (loaded, []))[1].append(run_dir)
    for loaded, members in groups.values():
        metrics = {d: artifact.read_json(artifact.join(d, artifact.METRICS)) for d in members}
        start = time.perf_counter()
        reference = reference_flow(loaded.config, loaded.task,
                                   times=[m["t"] for m in metrics.values()])
        seconds = time.perf_counter() - start  # Appendix G's compute time, Fig. 13 (c)
        for run_dir in members:
            test_outputs = artifact.read_run_npy(run_dir, artifact.TEST_OUTPUTS, metrics[run_dir])
            result = dict(compare(test_outputs, metrics[run_dir]["t"],
                                  metrics[run_dir]["test_error"], reference),
                          reference_wall_seconds=seconds)
            artifact.write_json(artifact.join(run_dir, artifact.FIDELITY), result)
            logger.info("%s: deviation from the reference flow %.3g, test error %+.4f, t %+.4g",
                        run_dir, result["output_deviation"], result["test_error_difference"],
                        result["t_difference"])
            results[run_dir] = result
    return [results[d] for d in run_dirs]


def check_run(run_dir, task=None):
    """`check_runs` of one run: its fidelity (module docstring), also in `fidelity.json`."""
    return check_runs([run_dir], task)[0]
