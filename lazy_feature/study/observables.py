"""Observables of one run read from its artifact: t_{L/2} (eq. 19) and the √h·α rescalings.

√h·α is the parameter that separates the regimes (Section 3). In the feature-training
regime the loss halves at t_{L/2} ~ √h·α (eq. 19), so t/(√h·α) collapses the learning
curves (Fig. 5 b, c), and the relative weight change goes as (√h·α)^(-b)/√h (eq. 30), so
√h·‖w − w0‖/‖w0‖ collapses it (Fig. 9).
"""
import numpy as np
import pandas as pd

from lazy_feature.run import artifact
from lazy_feature.run.config import sqrt_h_alpha


def read_dynamics(run_dir):
    """The dynamics log of a run as a DataFrame, one row per logged step, ordered by step.

    null entries (dout and dgrad before the first step) become NaN.
    """
    records = pd.DataFrame.from_records(artifact.read_run_jsonl(run_dir))
    return records.sort_values("step", ignore_index=True) if "step" in records else records


def t_half(t, rescaled_loss):
    """t_{L/2}: the first time α²L falls to half its first logged value (Section 5, eq. 19).

    Interpolates linearly in t between the two logged points that bracket the crossing.
    Non-finite points are ignored; NaN when the loss never halves (or nothing is logged).
    """
    t, loss = np.asarray(t, dtype=float), np.asarray(rescaled_loss, dtype=float)
    keep = np.isfinite(t) & np.isfinite(loss)
    t, loss = t[keep], loss[keep]
    if t.size == 0 or not loss[0] > 0:
        return float("nan")
    half = 0.5 * loss[0]
    below = np.flatnonzero(loss <= half)
    if below.size == 0:
        return float("nan")
    i = below[0]  # i ≥ 1 because loss[0] > half
    fraction = (loss[i - 1] - half) / (loss[i - 1] - loss[i])
    return float(t[i - 1] + fraction * (t[i] - t[i - 1]))


def rescaled_time(t, alpha, width):
    """t/(√h·α), the time axis on which feature-training learning curves collapse (eq. 19)."""
    return t / sqrt_h_alpha(alpha, width)


def rescaled_test_error(means, by="width", column="test_error"):
    """(err − min)/(max − min) within each `by` group: the rescaled error of Fig. 3 (d).

    `means` holds one mean error per (group, x); returns it with a `rescaled` column (NaN
    in a group whose errors are all equal).
    """
    errors = means.groupby(by)[column]
    low, span = errors.transform("min"), errors.transform("max") - errors.transform("min")
    return means.assign(rescaled=(means[column] - low) / span.where(span > 0))


def rescaled_weight_drift(weight_drift, width):
    """√h·‖w − w0‖/‖w0‖, which depends on √h·α alone (Fig. 9, eqs. 29-30)."""
    return np.sqrt(width) * weight_drift


def _number(record, key):
    value = record.get(key)
    return float("nan") if value is None else float(value)


def observables(run_dir):
    """The dynamical observables of one run directory.

    Returns a dict with
      sqrt_h_alpha: √h·α of the run's config;
      t_half: t_{L/2} from the dynamics log (eq. 19), NaN without a log;
      t_half_rescaled: t_{L/2}/(√h·α), constant in the feature regime (Fig. 5 c);
      weight_drift, output_norm: the final ‖w − w0‖/‖w0‖ and RMS of f(w) − f(w0) on the
        training set, from metrics.json (NaN for a run that did not finish).
    """
    config = artifact.read_json(artifact.join(run_dir, artifact.CONFIG))
    scale = sqrt_h_alpha(float(config["alpha"]), float(config["width"]))
    half = float("nan")
    if artifact.exists(artifact.join(run_dir, artifact.DYNAMICS)):
        dynamics = read_dynamics(run_dir)
        half = t_half(dynamics.get("t", ()), dynamics.get("rescaled_loss", ()))
    metrics_path = artifact.join(run_dir, artifact.METRICS)
    metrics = artifact.read_json(metrics_path) if artifact.exists(metrics_path) else {}
    return {
        "sqrt_h_alpha": float(scale),
        "t_half": half,
        "t_half_rescaled": half / scale,
        "weight_drift": _number(metrics, "weight_drift"),
        "output_norm": _number(metrics, "output_norm"),
    }
