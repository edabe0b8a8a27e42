r"""The `report` stage: a sweep's table as the paper's figures and a markdown summary.

Figs. 3 (b-d), 4, 5 and 9 as PNG and SVG, and summary.md with the performance per (α, h)
and the fitted exponents next to the paper's, in <sweep_dir>/report by default:

  python -m pipelines.report --sweep_dir=runs/quick
"""
from absl import flags

from lazy_feature import report, sweep
from pipelines import common

flags.DEFINE_string("sweep_dir", None, "A sweep directory written by the sweep stage.",
                    required=True)
flags.DEFINE_string("output_dir", None, "Where to write the report (default <sweep_dir>/report).")
FLAGS = flags.FLAGS


def main():
    runs, ensembles = sweep.read_tables(FLAGS.sweep_dir)
    paths = report.write_report(runs, ensembles,
                                FLAGS.output_dir or report.default_dir(FLAGS.sweep_dir))
    print(f"report: {paths[-1]}")


if __name__ == "__main__":
    common.main("report", main)
