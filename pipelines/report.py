r"""The `report` stage: a sweep's table as the paper's figures and a markdown summary.

Figs. 3 (b-d), 4, 5 and 9 as PNG and SVG with their data as CSV, fits.csv, claims.csv and
summary.md (the paper's claims judged, runs used and excluded per (α, h), the performance,
the fitted exponents next to the paper's), in <sweep_dir>/report by default:

  python -m pipelines.report --sweep_dir=runs/quick
"""
from pipelines import console

if __name__ == "__main__":
    console.quiet_tensorflow()  # first: the imports below load TensorFlow

from absl import flags

from lazy_feature.study import report
from lazy_feature.study import sweep
from pipelines import common

flags.DEFINE_string("sweep_dir", None, "A sweep directory written by the sweep stage.",
                    required=True)
flags.DEFINE_string("output_dir", None, "Where to write the report (default <sweep_dir>/report).")
FLAGS = flags.FLAGS


def main():
    runs, ensembles = sweep.read_tables(FLAGS.sweep_dir)
    grid = sweep.read_sweep_config(FLAGS.sweep_dir)  # its fit ranges, where it states them
    paths = report.write_report(runs, ensembles,
                                FLAGS.output_dir or report.default_dir(FLAGS.sweep_dir),
                                grid and grid.feature_range, grid and grid.lazy_range)
    print(f"report: {paths[-1]}")


if __name__ == "__main__":
    common.main("report", main)
