"""The sweep stage's work: a grid run in its directory, then its report; a Table 1 group row
by row, each as its own sweep, then the table (pipelines/sweep.py is its binary)."""
from lazy_feature.run import artifact
from lazy_feature.study import sweep, table1
from lazy_feature.study.report import default_dir, write_report


def run(grid, output_dir, console=None, report=True, report_only=False, **run_options):
    """Run `grid` (a SweepConfig) in output_dir (`sweep.run_sweep` with `run_options`, its
    progress on the stream `console`), or with report_only only write its tables from the
    runs done; then, with `report`, its report, whose path it prints. Returns the runs
    table."""
    if report_only:
        artifact.makedirs(output_dir)
        runs, ensembles = sweep.write_tables(output_dir, grid.configs())
    else:
        runs, ensembles = sweep.run_sweep(grid, output_dir, progress_stream=console,
                                          **run_options)
    if report:
        paths = write_report(runs, ensembles, default_dir(output_dir), grid.feature_range,
                             grid.lazy_range)
        print(f"report: {paths[-1]}")
    return runs


def run_table1(rows, output_dir, settings, group, console, **options):
    """Run every row of the Table 1 group `group` ({row name: config function}) whose data set
    is present, with `settings` (`table1.plan`), each in <output_dir>/<row> (`run` with
    `options`), then write table1.md and table1.csv there; rows whose data set is absent read
    "data not found". Returns the table's paths, table1.md last."""
    planned = table1.plan(rows, settings, group)
    for row, _, why in planned:
        console.write(f"table 1, {row.name}: "
                      + (f"skipped, {table1.NOT_FOUND} ({why})" if why else "to run") + "\n")
    records = []
    for row, grid, why in planned:
        if why is not None:
            records.append(table1.missing_row(row, why))
            continue
        console.write(f"table 1, {row.name}:\n")
        runs = run(grid, artifact.join(output_dir, row.name), console, **options)
        records += table1.judge_row(row, runs, grid.feature_range, grid.lazy_range)
    paths = table1.write(output_dir, records)
    print(f"table 1: {paths[-1]}")
    return paths
