"""The `appendix` stage (a Kubeflow task): a trained run's appendix observables, stored where
the sweep's row reads them back, as a sweep run adds them."""
import dataclasses
import os

import numpy as np
import pytest

from lazy_feature.run import artifact
from lazy_feature.study import ntk_eval
from lazy_feature.study import grid_point
from lazy_feature.study import sweep
from lazy_feature.run.config import TrainConfig
from tests.helpers import stage_in_process, write_class_template_mnist


@pytest.mark.slow
def test_appendix_stage_stores_what_the_sweep_row_reads_back(tmp_path):
    write_class_template_mnist(tmp_path / "mnist", per_class_train=3, per_class_test=2)
    config = TrainConfig(dataset="mnist", data_dir=str(tmp_path / "mnist"), n_train=20,
                         n_test=16, width=8, alpha=10.0)
    out = str(tmp_path / "sweep")
    # As in the pipeline: train (a sweep row without the observables stands for it), then
    # the appendix task on the run, then the sweep's row, which must not measure again.
    grid_point.execute_run(config, out, ntk=False)
    os.remove(grid_point.row_path(out, config.run_id()))
    run_dir = artifact.join(out, grid_point.RUNS, config.run_id())
    result = stage_in_process("appendix", f"--run_dir={run_dir}", "--velocity",
                              "--velocity_max_test=8", "--gram_probe=6")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    stored = {name: os.path.getmtime(os.path.join(run_dir, name))
              for name in ("velocity.json", ntk_eval.GRAM_INIT, ntk_eval.GRAM_END)}
    gram = np.load(os.path.join(run_dir, ntk_eval.GRAM_INIT))
    assert gram.shape == (6, 6) and np.allclose(gram, gram.T)
    options = dataclasses.replace(sweep.SweepConfig(), velocity=True, velocity_max_test=8,
                                  gram_probe=6).appendix_options()
    row = grid_point.execute_run(config, out, ntk=False, appendix=options)
    assert row["z_dot_n_probe"] == 8 and set(printed) <= set(row)
    assert {name: str(row[name]) for name in printed} == printed
    assert {f"z_dot_{ell}" for ell in range(1, config.depth + 1)} <= set(printed)
    assert {name: os.path.getmtime(os.path.join(run_dir, name)) for name in stored} == stored
