"""What TensorBoard shows of a tiny `train` run with the live drift: read back from its events."""
import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib import colormaps
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from lazy_feature.run import artifact
from lazy_feature.run import summaries
from lazy_feature.kernel import ntk
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.run.data import BinaryTask
from tests.helpers import sphere_inputs

PROBE = 8
CONFIG = TrainConfig(n_train=40, n_test=40, width=20, alpha=1.0, dtype="float64", init_seed=3)


def _task():
    x = sphere_inputs(80, 10, seed=7)
    y = np.sign(x[:, 0] - 0.3 * x[:, 1])
    return BinaryTask(x[:40], y[:40], x[40:], y[40:], np.zeros(40, int), np.zeros(40, int))


class _Interrupt(keras.callbacks.Callback):
    """Ctrl-C at step 40: the run saves its checkpoint at the end of the step and stops."""

    def on_train_batch_end(self, batch, logs=None):
        if int(logs["step"]) == 40:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run killed at step 40 and resumed, with the live drift on 8 points."""
    out = str(tmp_path_factory.mktemp("run"))
    with pytest.raises(KeyboardInterrupt):
        runner.train(CONFIG, out, task=_task(), drift_probe=PROBE, extra_callbacks=[_Interrupt()])
    metrics = runner.train(CONFIG, out, task=_task(), drift_probe=PROBE)
    assert metrics["converged"]
    acc = event_accumulator.EventAccumulator(
        os.path.join(out, artifact.EVENTS, summaries.tensorboard_run_name(CONFIG)),
        size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    with open(os.path.join(out, artifact.DYNAMICS)) as f:
        records = [json.loads(line) for line in f]
    return out, metrics, acc, records


def _series(acc, tag):
    return [(e.step, tf.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]


def _scalar_tags(acc):
    return {tag for tag in acc.Tags()["tensors"]
            if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"}


@pytest.mark.slow
def test_one_run_named_after_the_run(trained):
    out, *_ = trained
    name = summaries.tensorboard_run_name(CONFIG)
    assert os.listdir(os.path.join(out, artifact.EVENTS)) == [name]
    assert name == f"a=1_h=20_seed=3_{CONFIG.run_id()[:8]}"


@pytest.mark.slow
def test_grouped_tags_each_written_once_with_a_description(trained):
    _, _, acc, records = trained
    record_tags = {summaries.record_tag(k) for k in records[-1] if k != "step"}
    drift = {"drift/ntk_drift", "drift/ntk_drift_vs_log_t", "drift/ntk_norm_ratio",
             "drift/log10_ntk_drift"}
    result = {"result/test_error", "result/test_loss", "result/converged"}
    assert _scalar_tags(acc) == record_tags | drift | result
    assert {"observables/rescaled_loss", "observables/train_error", "observables/weight_drift",
            "solver/t", "solver/dout", "solver/dgrad"} <= record_tags
    assert all("/" in tag for tag in record_tags)  # every record key has its group
    for tag in _scalar_tags(acc) - result - {"drift/ntk_drift_vs_log_t"}:  # its own x axis
        steps = [step for step, _ in _series(acc, tag)]
        assert steps == sorted(set(steps)) and len(steps) > 3, tag  # one line, no step twice
        assert set(steps) <= {r["step"] for r in records}, tag
    for tag in _scalar_tags(acc) | {"drift/gram_init", "drift/gram_now"}:
        assert acc.SummaryMetadata(tag).summary_description == summaries.DESCRIPTIONS[tag]
    # the records' own values, indexed by the accepted step
    loss = dict(_series(acc, "observables/rescaled_loss"))
    assert [r["step"] for r in records] == sorted(loss)
    assert all(loss[r["step"]] == pytest.approx(r["rescaled_loss"]) for r in records)


def test_hparams_are_the_regime_then_what_applies_to_the_dynamics():
    flow = summaries.run_hparams(TrainConfig(width=64, alpha=0.5).resolved())
    assert list(flow)[:6] == list(summaries.REGIME_HPARAMS) and list(flow)[-1] == "run_id"
    assert (flow["sqrt_h_alpha"], flow["depth"]) == (4.0, 3)  # depth as the net takes it
    assert {"max_dgrad", "integrator", "output_tol"} <= set(flow)
    assert not {"batch_size", "tau", "learning_rate", "max_steps"} & set(flow)
    adam = summaries.run_hparams(TrainConfig(dynamics="adam", n_train=100).resolved())
    assert "batch_size" in adam
    assert not {"max_dgrad", "max_dout", "dt0", "landing_tol", "integrator", "tau"} & set(adam)
    momentum = summaries.run_hparams(TrainConfig(dynamics="momentum", tau=0.5).resolved())
    assert {"tau", "max_dgrad", "integrator"} <= set(momentum) and "batch_size" not in momentum


def test_unknown_record_keys_are_written_bare():
    assert summaries.record_tag("something_new") == "something_new"
    assert summaries.record_tag("dout") == "solver/dout"


@pytest.mark.slow
def test_settings_and_metrics_in_the_hparams_plugin(trained):
    _, metrics, acc, _ = trained
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["alpha"].number_value == CONFIG.alpha
    assert start.hparams["width"].number_value == CONFIG.width
    assert start.hparams["init_seed"].number_value == CONFIG.init_seed
    assert start.hparams["activation"].string_value == CONFIG.activation
    assert start.hparams["sqrt_h_alpha"].number_value == pytest.approx(CONFIG.sqrt_h_alpha)
    assert start.group_name == CONFIG.run_id()
    experiment = hparams_metadata.parse_experiment_plugin_data(
        content[hparams_metadata.EXPERIMENT_TAG])
    infos = {h.name: h for h in experiment.hparam_infos}
    assert {"alpha", "width", "depth", "n_train", "dtype", "centered"} <= set(infos)
    # The regime's columns come first, and five of them are what TensorBoard shows of the
    # HParams table by default (it lists those that differ first).
    assert [h.name for h in experiment.hparam_infos][:6] == list(summaries.REGIME_HPARAMS)
    assert {h.name for h in experiment.hparam_infos if h.differs} == set(
        summaries.DEFAULT_COLUMNS)
    assert infos["alpha"].type == infos["width"].type == api_pb2.DATA_TYPE_FLOAT64  # filterable
    assert infos["centered"].type == api_pb2.DATA_TYPE_BOOL
    assert {"result/test_error", "observables/rescaled_loss", "drift/ntk_drift"} <= {
        m.name.tag for m in experiment.metric_infos}
    [(step, test_error)] = _series(acc, "result/test_error")
    assert step == metrics["steps"] and test_error == pytest.approx(metrics["test_error"])


@pytest.mark.slow
def test_kernel_drift_against_log_t(trained):
    _, _, acc, records = trained
    by_step = dict(_series(acc, "drift/ntk_drift"))
    assert by_step[0] == 0.0 and by_step[records[-1]["step"]] > 0  # Θ(w0) against itself
    first_at = {}  # log-t step -> the first record there
    for r in records[1:]:
        first_at.setdefault(summaries.log_t_step(r["t"]), r)
    vs_log_t = _series(acc, "drift/ntk_drift_vs_log_t")
    assert set(s for s, _ in vs_log_t) == set(first_at) and len(vs_log_t) > 3
    assert [s for s, _ in vs_log_t] == sorted(s for s, _ in vs_log_t)
    for s, drift in vs_log_t:  # the first record at each step, or the first after the resume
        assert any(drift == by_step[r["step"]] for r in records[1:]
                   if summaries.log_t_step(r["t"]) == s)
    assert vs_log_t[0][1] == by_step[first_at[vs_log_t[0][0]]["step"]]
    assert summaries.log_t_step(1.0) == 0 and summaries.log_t_step(10.0) == 100
    assert summaries.log_t_step(0.1) == -100


def _decode(acc, tag):
    return [(e.step, tf.image.decode_png(tf.make_ndarray(e.tensor_proto)[2]).numpy())
            for e in acc.Tensors(tag)]


@pytest.mark.slow
def test_gram_images_each_on_its_own_range(trained):
    out, _, acc, records = trained
    inits = _decode(acc, "drift/gram_init")  # once per process: at 0 and at the resume
    init = inits[0][1]
    assert [s for s, _ in inits][0] == 0 and len(inits) == 2
    assert all(np.array_equal(image, init) for _, image in inits)
    now = _decode(acc, "drift/gram_now")
    assert [s for s, _ in now] == [r["step"] for r in records]  # each step once
    last = now[-1][1]
    assert init.shape == last.shape == (320, 416, 3)  # the matrix and its colour bar
    dark, bright = (colormaps["viridis"](v, bytes=True)[:3] for v in (0.0, 1.0))
    for image in (init, last):  # each spans the whole colour map
        colours = {tuple(p) for p in image.reshape(-1, 3)}
        assert tuple(dark) in colours and tuple(bright) in colours
    # ... though the two matrices have different ranges, so one shared scale could not do that
    model = runner.load_run(out, task=_task()).model
    x = _task().x_train[:PROBE]
    x = x[np.argsort(-_task().y_train[:PROBE], kind="stable")]
    gram0, gram = ntk.gram(model.initial_network, x), ntk.gram(model.network, x)
    assert abs(gram.max() / gram0.max() - 1) > 0.05
    np.testing.assert_array_equal(init, summaries.gram_image(gram0))
    assert np.mean(last == summaries.gram_image(gram)) > 0.99
    # The drift on a log scale: log10 of the drift at every step past w0.
    drift, log_drift = (dict(_series(acc, tag)) for tag in ("drift/ntk_drift",
                                                            "drift/log10_ntk_drift"))
    assert set(log_drift) == {step for step, value in drift.items() if value > 0}
    assert all(log_drift[step] == pytest.approx(np.log10(drift[step]), rel=1e-6)
               for step in log_drift)

