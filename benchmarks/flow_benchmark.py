r"""Gradient evaluations, wall and CPU time and fidelity of each integrator of gradient flow
(issues 11 and 31).

For each √h·α and seed, one network per integrator is trained from the same w0 (`runner.train`,
L = 3, binary Fashion-MNIST, or what `--set` says), and one reference flow (`fidelity.reference_flow`: Euler with
ε_∇/100 and max_dout/10, float64) runs to its own stop and lands on each integrator's final
t. Printed per run: gradient evaluations, accepted and rejected steps, wall time, CPU time
(of the process, all its threads), t at
convergence, ‖F − F_ref‖/‖F_ref‖ on the test set with each flow at its own stop (dev_stop:
what a run reports) and at the run's t (dev_t: the integration error alone), the test error;
then
per √h·α the ratios to the paper's Euler scheme (evaluations, wall and CPU time; `target`
marks wall and CPU ≤ 1/--target of Euler's, 8 by default (issue 31), at a deviation ≤
Euler's). Euler runs as the paper's scheme in the paper's precision: float64, direct form
(`--euler=paper`); the other runs at `--dtype` (auto by default: the precision policy's,
float32 in the difference form). The reference is not timed against anything: it costs
about 10-30 Euler runs.

The reference is the issue's Euler flow by default; `--reference=dormand_prince@1e-8:1e-7`
takes a tight Runge-Kutta flow instead (float64, same w0 and data), which costs a few Euler
runs and resolves deviations well below the Euler reference's own ~3e-5. Cheaper ones,
measured against it at n = 2 000, h = 100, seed 0: dormand_prince@1e-6:1e-5 deviates 1.6e-8
at √h·α = 1 and 1.5e-7 at 1e-2 (2.7 and 2.4 Euler runs); in the lazy regime, where
Dormand-Prince is held by stability (8 Euler runs at 1e4), rkc@1e-4:1e3 deviates 1.2e-5
(0.66 Euler runs; its error falls as tol^(2/3)). References are
cached on disk (`--cache_dir`, by the reference config's run id and the times asked), so a
rerun with other integrators or tolerances integrates only the times it has not seen; runs
are cached too, by run id (clear the cache after changing an integrator). `--common_t` runs
every other integrator to the Euler run's final t rather than to its own convergence, so
that one reference time, cached, serves every attempt.

  python benchmarks/flow_benchmark.py              # the issue's spec: n = 2000, 3 seeds
  python benchmarks/flow_benchmark.py --n_train=10000 --sqrt_h_alphas=1e3,1e-2 --seeds=0
  python benchmarks/flow_benchmark.py ... --reference=none   # times alone, no reference flow
  python benchmarks/flow_benchmark.py --n_train=500 --width=64 --seeds=0 --n_test=2000
  python benchmarks/flow_benchmark.py --integrators=euler,bogacki_shampine,rkc \
      --tolerances=1e-4:1e-3,1e-3:1e-2 ...   # each Runge-Kutta method (pairs, rkc) at each
                                             # output:direction tol
  python benchmarks/flow_benchmark.py --integrators=euler,bogacki_shampine@3e-3:1e-2 ...
                                             # a method at its own tolerances
  python benchmarks/flow_benchmark.py --integrators=euler,bogacki_shampine_rkc@5e-4:5e-3:1e-3
                                             # a switching one's RKC phase at 1e-3

`--set FIELD=VALUE,...` (repeatable) sets TrainConfig fields of every run and of the reference
(values parsed with the field's type; none for None, true/false for a bool), e.g. another
depth, β, biases, the uncentered model or another architecture. The benchmark's own settings
(n_train, n_test, width, alpha, init_seed, dtype, integrator and tolerances) have their own
flags. √h·α is the config's (`TrainConfig.sqrt_h_alpha`: h = width, the Wide-ResNet's k).

  python benchmarks/flow_benchmark.py --n_train=500 --width=64 --n_test=1000 --seeds=0 \
      --integrators=euler,default --reference=dormand_prince@1e-9:1e-8 \
      --set depth=5,activation_beta=10 --set bias_scale=1
  python benchmarks/flow_benchmark.py ... --width=8 --set architecture=cnn
"""
import argparse
import collections
import dataclasses
import os
import tempfile
import time
import typing

import numpy as np

from lazy_feature.run import artifact
from lazy_feature.run import data
from lazy_feature.study import fidelity
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.flow.registry import INTEGRATORS


def _floats(text):
    return [float(v) for v in text.split(",")]


def _tolerances(text):
    """The TrainConfig settings of `output:direction[:stiff]`: output_tol, direction_tol and
    stiff_output_tol (a switching integrator's RKC phase, `GradientFlow.stiff_output_tol`;
    None when not given)."""
    values = [float(v) for v in text.split(":")]
    return dict(zip(("output_tol", "direction_tol", "stiff_output_tol"), values + [None]))


# The TrainConfig fields the benchmark sets itself (its own flags), which --set may not.
_OWN_FIELDS = ("n_train", "n_test", "width", "alpha", "init_seed", "dtype", "integrator",
               "output_tol", "direction_tol", "stiff_output_tol")


def _field_value(field, text):
    """`text` as a value of TrainConfig's `field` (a dataclasses.Field): none for an optional
    field's None, true/false for a bool, else the field's (non-None) type."""
    types = [t for t in typing.get_args(field.type) if t is not type(None)] or [field.type]
    if text.lower() == "none" and type(None) in typing.get_args(field.type):
        return None
    if types[0] is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise argparse.ArgumentTypeError(f"{field.name} takes true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return types[0](text)


def _settings(text):
    """--set's `FIELD=VALUE,...` as a dict of TrainConfig fields and parsed values."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    settings = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in fields or not value:
            raise argparse.ArgumentTypeError(f"expected FIELD=VALUE of TrainConfig, got {item!r}")
        if name in _OWN_FIELDS:
            raise argparse.ArgumentTypeError(f"{name} has its own flag (--{name}, --sqrt_h_alphas, "
                                             "--seeds, --dtype, --integrators, --tolerances)")
        settings[name] = _field_value(fields[name], value)
    return settings


def _variants(names, tolerances):
    """(integrator, tolerances or None) for each name: Euler and `default` once, NAME@o:d at
    its own tolerances, each other Runge-Kutta method once per tolerance pair."""
    for name in names:
        if "@" in name:
            name, tols = name.split("@")
            yield name, _tolerances(tols)
            continue
        for tols in ([None] if name in ("euler", "default") else tolerances):
            yield name, tols


def _reference_config(config, spec):
    """The reference's TrainConfig: spec `euler` is the issue's (`fidelity.reference_config`),
    NAME@o:d that integrator at those tolerances, in float64."""
    if spec == "euler":
        return fidelity.reference_config(config)
    name, tols = spec.split("@")
    return dataclasses.replace(config, integrator=name, dtype="float64",
                               landing_tol=fidelity.REFERENCE_LANDING_TOL, **_tolerances(tols))


def _store(path, arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".partial.npz", **arrays)
    os.replace(path + ".partial.npz", path)
    return arrays


def _cached(path, compute):
    """The dict of arrays stored at `path`, or `compute()`'s, stored there first."""
    return dict(np.load(path)) if os.path.exists(path) else _store(path, compute())


def _reference(config, task, times, reference, cache_dir):
    """`fidelity.reference_flow` of `config` at `times` with the `reference` config, from the
    disk cache where it holds them (by the reference's run id and each time)."""
    path = os.path.join(cache_dir, f"reference-{reference.run_id()}.npz")
    stored = dict(np.load(path)) if os.path.exists(path) else {}
    missing = [t for t in times if f"t={t!r}" not in stored]
    if missing or not stored:
        found = fidelity.reference_flow(config, task, missing, reference=reference)
        stored.update({f"t={t!r}": outputs for t, outputs in found.outputs_at.items()},
                      t=found.t, test_outputs=found.test_outputs, test_error=found.test_error,
                      steps=max(found.steps, stored.get("steps", 0)),
                      gradient_evaluations=max(found.gradient_evaluations,
                                               stored.get("gradient_evaluations", 0)))
        _store(path, stored)
    return fidelity.Reference(
        float(stored["t"]), stored["test_outputs"], float(stored["test_error"]),
        {t: stored[f"t={t!r}"] for t in times}, int(stored["steps"]),
        int(stored["gradient_evaluations"]), 0)


def _run(config, task, until, cache_dir):
    """One run's figures (evaluations, steps, rejected, wall, CPU, t, test error) and test
    outputs,
    cached by run id: to convergence (`runner.train`) if `until` is None, else integrated to t =
    `until` exactly (and on to convergence if that comes later; `fidelity.reference_flow`
    with the run's own config), its outputs and evaluations at that t."""
    def compute():
        start, cpu = time.perf_counter(), time.process_time()
        if until is None:
            run_dir = tempfile.mkdtemp()
            metrics = runner.train(config, run_dir, task=task)
            outputs = np.load(os.path.join(run_dir, artifact.TEST_OUTPUTS))
            figures = [metrics[k] for k in ("gradient_evaluations", "steps", "rejected_steps")]
            t, error = metrics["t"], metrics["test_error"]
        else:
            found = fidelity.reference_flow(config, task, [until], reference=config)
            outputs, t, error = found.outputs_at[until], until, found.test_error
            figures = [found.gradient_evaluations, found.steps, found.rejected_steps]
        return dict(figures=np.array(figures), wall=time.perf_counter() - start,
                    cpu=time.process_time() - cpu, t=t, test_error=error, test_outputs=outputs)

    tag = "convergence" if until is None else f"t={until!r}"
    return _cached(os.path.join(cache_dir, f"run-{config.run_id()}-{tag}.npz"), compute)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--n_test", type=int, default=10000)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--sqrt_h_alphas", type=_floats, default=[1e4, 1.0, 1e-2])
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")],
                        default=[0, 1, 2])
    parser.add_argument("--integrators", default=",".join((*INTEGRATORS, "default")),
                        help="names of registry.INTEGRATORS (NAME@o:d at tolerances o:d), and "
                        "`default` for TrainConfig's")
    parser.add_argument("--dtype", default="auto", help="float32, float64 or auto (the "
                        "precision policy's) of every run but euler's (--euler); the reference "
                        "is always float64")
    parser.add_argument("--euler", choices=("paper", "same"), default="paper",
                        help="paper: euler runs in float64 and the direct form, the paper's "
                        "scheme in its own precision; same: at --dtype and --set like the rest")
    parser.add_argument("--target", type=float, default=8.0,
                        help="the factor of wall and CPU time below Euler's that `target` marks")
    parser.add_argument("--tolerances", default=None,
                        help="output_tol:direction_tol[:stiff_output_tol], comma-separated: each "
                        "Runge-Kutta integrator runs at each (default: TrainConfig's)")
    parser.add_argument("--reference", default="euler",
                        help="euler (the issue's: eps_grad/100, max_dout/10), NAME@o:d, an "
                        "integrator at tolerances o:d (e.g. dormand_prince@1e-8:1e-7), or none: "
                        "times alone, no deviation measured (`target` then judges times)")
    parser.add_argument("--common_t", action="store_true",
                        help="integrate every other run to the euler run's final t (the first "
                        "integrator listed must be euler), so that one reference time serves "
                        "all: evaluations to that t (or to convergence if later)")
    parser.add_argument("--set", type=_settings, action="append", default=[],
                        metavar="FIELD=VALUE,...", help="TrainConfig fields for every run and "
                        "the reference, e.g. depth=5,activation_beta=10 (repeatable)")
    parser.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(),
                                                            "flow_benchmark_cache"),
                        help="runs and references are kept here, by run id: a rerun only "
                        "computes what it has not seen (its wall times are those measured then)")
    args = parser.parse_args()
    tolerances = [None] if args.tolerances is None else [
        _tolerances(pair) for pair in args.tolerances.split(",")]

    overrides = {k: v for settings in args.set for k, v in settings.items()}
    # The data as every run takes it (the dataset and its shape, images for the cnn and
    # wide_resnet), loaded once.
    task = runner.load_task(TrainConfig(n_train=args.n_train, n_test=args.n_test,
                                        width=args.width, dtype="float64", **overrides))
    # Untimed: TensorFlow's one-time start-up is charged to no integrator.
    runner.train(TrainConfig(n_train=10, n_test=10, width=8, max_steps=3), tempfile.mkdtemp(),
                 task=data.load_binary_task("fashion_mnist", n_train=10, n_test=10, data_seed=0))
    default = TrainConfig.integrator
    shown = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "L = 3"
    print(f"n = {args.n_train}, h = {args.width}, {shown}, {args.n_test} test points, dtype "
          f"{args.dtype}; euler: {args.euler}; default integrator: {default}; reference: "
          f"{args.reference}{'; every run to euler t' if args.common_t else ''}")
    print(f"{'sqrt_h_alpha':>12} {'seed':>4} {'integrator':>30} {'dtype':>7} {'form':>10} "
          f"{'evals':>7} {'steps':>6} {'rejected':>8} {'wall_s':>7} {'cpu_s':>7} {'t':>10} "
          f"{'dev_stop':>9} {'dev_t':>9} {'test_err':>8}")
    totals = collections.defaultdict(lambda: np.zeros(4))  # evals, wall, cpu, deviation
    for sha in args.sqrt_h_alphas:
        for seed in args.seeds:
            runs, until = [], None
            for name, tols in _variants(args.integrators.split(","), tolerances):
                paper = name == "euler" and args.euler == "paper"
                config = TrainConfig(
                    n_train=args.n_train, n_test=args.n_test, width=args.width,
                    alpha=sha / np.sqrt(args.width), init_seed=seed,
                    dtype="float64" if paper else None if args.dtype == "auto" else args.dtype,
                    integrator=default if name == "default" else name,
                    **({} if tols is None else tols),
                    **dict(overrides, **(dict(form="direct") if paper else {})))
                if tols is not None:
                    name = f"{name}@{'/'.join(f'{v:g}' for v in tols.values() if v is not None)}"
                elif name == "default":
                    name = f"default={config.resolved().integrator}"
                found = _run(config, task, until, args.cache_dir)
                if args.common_t and name == "euler":
                    until = float(found["t"])
                runs.append((name, found, config))
            reference = None if args.reference == "none" else _reference(
                config, task, [float(f["t"]) for _, f, _ in runs],
                _reference_config(config, args.reference), args.cache_dir)
            for name, found, run_config in runs:
                evals, steps, rejected = (int(v) for v in found["figures"])
                t, wall, error = float(found["t"]), float(found["wall"]), float(found["test_error"])
                cpu = float(found["cpu"])
                compared = (dict(output_deviation=np.nan, output_deviation_common_t=np.nan)
                            if reference is None else
                            fidelity.compare(found["test_outputs"], t, error, reference))
                deviation = compared["output_deviation"]  # each at its own stop
                totals[sha, name] += (evals, wall, cpu, deviation)
                print(f"{sha:12.0e} {seed:4d} {name:>30} {run_config.dtype:>7} "
                      f"{run_config.form:>10} {evals:7d} {steps:6d} {rejected:8d} {wall:7.1f} "
                      f"{cpu:7.1f} {t:10.4g} {deviation:9.2e} "
                      f"{compared['output_deviation_common_t']:9.2e} {error:8.4f}")
            if reference is None:
                continue
            print(f"{sha:12.0e} {seed:4d} {'reference':>30} {'':>7} {'':>10} "
                  f"{reference.gradient_evaluations:7d} {reference.steps:6d} {'':>8} {'':>7} "
                  f"{'':>7} {reference.t:10.4g} {'':>9} {'':>9} {reference.test_error:8.4f}")
    print(f"\nsums over seeds, relative to euler: evaluations, wall time, CPU time; mean "
          f"deviation from the reference, each at its own stop; target: wall and CPU <= "
          f"1/{args.target:g} of euler's at a deviation <= euler's")
    for sha in args.sqrt_h_alphas:
        if (sha, "euler") not in totals:  # nothing to compare with
            continue
        euler = totals[sha, "euler"]
        for name in dict.fromkeys(name for s, name in totals if s == sha):
            value = totals[sha, name]
            met = (args.target * value[1] <= euler[1] and args.target * value[2] <= euler[2]
                   and (args.reference == "none" or value[3] <= euler[3]))
            print(f"{sha:12.0e} {name:>30} evals x{value[0] / euler[0]:.3f}  wall "
                  f"x{value[1] / euler[1]:.3f}  cpu x{value[2] / euler[2]:.3f}  deviation "
                  f"{value[3] / len(args.seeds):.2e}{'  target' if met else ''}")


if __name__ == "__main__":
    main()
