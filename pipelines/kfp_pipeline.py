r"""A named sweep as a Kubeflow Pipelines (v2) pipeline: train → ntk_eval → appendix →
ensembles → report; a Table 1 group as every row's sweep, then the table.

Compiles the grid of a config of pipelines/configs/ into a pipeline YAML whose steps are
container components running this package's absl binaries in an image that holds the
package and its data set (e.g. built by running setup.sh):
  train      one task per grid point: `python -m pipelines.train`, every setting as a flag,
             into <output_dir>/runs/<run_id> (the sweep's layout; one component per
             `variants` entry of the grid);
  ntk_eval   after its run's train: `python -m pipelines.ntk_eval` (when the config has NTK);
  appendix   after that: `python -m pipelines.appendix`, the observables the grid asks for
             (velocity, fidelity, gram_probe), computed by the sweep's own
             `appendix_observables` and stored in the run directory;
  ensembles  after every run: `python -m pipelines.sweep --runner=inprocess --noreport`, which
             finds the runs complete (and their observables stored) and writes their rows,
             results.csv and ensembles.csv (eqs. 15-16 over the init seeds);
  report     `python -m pipelines.report`: the figures, fits, claims and summary.md.
A Table 1 group (--config=table1_quick or table1) compiles to these tasks for every row,
under <output_dir>/<row>, then one task `python -m pipelines.sweep --report_only` that
writes table1.md and table1.csv once every row has finished or failed: a row whose data set
the pods cannot read fails, and the table says "data not found" for it.
The output directory, a pipeline parameter, must be storage every pod sees (gs://...):

  pip install -e .[kfp]
  python -m pipelines.kfp_pipeline --config=quick --output=quick.yaml \
      --image=us-docker.pkg.dev/my-project/lazy-feature/lazy-feature:latest

then submit quick.yaml (Vertex AI Pipelines or a Kubeflow cluster) with
output_dir=gs://my-bucket/quick. A task that is retried resumes its run from its checkpoint.

Each data set is read from its default location in the image (lazy_feature.run.data) unless
--data_dirs names a folder for it, one every pod sees (a volume mounted into the pods: the
loaders open local files):

  python -m pipelines.kfp_pipeline --config=table1_quick --output=table1_quick.yaml \
      --data_dirs=mnist=/mnt/data/mnist,cifar10=/mnt/data/cifar10

Every train task of a run on that data set gets --data_dir=DIR (its ntk_eval and appendix
tasks read it from the run's config.json), and the sweep tasks (ensembles, the table) get
these pairs as their --data_dirs. The folders are fixed when the pipeline is compiled, not
parameters of a pipeline run: compile again to move them. A data set that no run of the
config is trained on, or a pair that is not dataset=DIR, is refused and nothing is written.
"""
from pipelines import console

if __name__ == "__main__":
    console.quiet_tensorflow()  # first: the imports below load TensorFlow

from absl import flags

from lazy_feature.study import grid_point
from lazy_feature.study import overrides
from lazy_feature.study import sweep as sweep_lib
from lazy_feature.errors import ConfigError
from pipelines import common, configs

flags.DEFINE_string("config", "quick", "A named sweep or Table 1 group: "
                    f"{', '.join(list(configs.CONFIGS) + list(configs.TABLES))}.")
flags.DEFINE_string("output", None, "The pipeline YAML to write.", required=True)
flags.DEFINE_string("image", None, "The container image of the steps: one holding this package "
                    "and its data set (e.g. built by running setup.sh in it).")
common.define_data_dirs_flag("the tasks of the runs on that data set read it from DIR "
                             "(fixed at compile time).")
FLAGS = flags.FLAGS

# The settings a grid varies are task parameters; the others are the config's, fixed.
VARIED = ("alpha", "width", "depth", "init_seed", "dtype")


def _flag(name, value):
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value!r}" if isinstance(value, float) else f"--{name}={value}"


def train_flags(config):
    """The `train` flags of the settings of `config` that a grid does not vary."""
    return [_flag(k, v) for k, v in config.to_dict().items() if k not in VARIED and v is not None]


def build(config_name, image, grid=None, data_dirs=None):
    """The pipeline function of the named sweep (or of `grid`, under that name), its steps
    running in `image`; a Table 1 group (configs.TABLES) compiles to every row's sweep, each
    under <output_dir>/<row>, then `table1`. `data_dirs` ({dataset: folder}) says where the
    runs on those data sets read them (`_with_data_dirs`)."""
    from kfp import dsl  # pylint: disable=import-outside-toplevel
    if config_name in configs.TABLES:
        named = {row: (make.__name__, make()) for row, make in configs.TABLES[config_name].items()}
    else:
        named = {"": (config_name, configs.get(config_name) if grid is None else grid)}
    grids = _with_data_dirs({row: grid for row, (_, grid) in named.items()}, data_dirs or {},
                           config_name)
    rows = {row: _SweepTasks(dsl, image, name, grids[row], row)
            for row, (name, _) in named.items()}
    if config_name in configs.TABLES:
        last = _sweep_command(dsl, image, config_name, "", ["--report_only", "--noreport",
                                                            *_data_dirs_flag(grids.values())])
        description = (f"Table 1 ({config_name}): each row's sweep, then table1.md and "
                       "table1.csv.")
    else:
        last = None
        description = f"The {config_name} sweep: train, ntk_eval, appendix, ensembles, report."

    @dsl.pipeline(name=f"lazy-feature-{config_name}", description=description)
    def pipeline(output_dir: str):
        finished = [tasks.add(output_dir) for tasks in rows.values()]
        if last is not None:  # rows whose data the cluster lacks fail: the table says so
            table = last(output_dir=output_dir).after(*finished).ignore_upstream_failure()
            table.set_display_name("table1")

    return pipeline


def _with_data_dirs(grids, data_dirs, config_name):
    """`grids` ({row: SweepConfig}) with the runs on a data set of `data_dirs` ({dataset:
    folder}) reading it from that folder, as the sweep's --data_dirs does; a ConfigError
    for a data set that no run of config_name is trained on."""
    used = {grid.base.dataset for grid in grids.values()}
    unused = sorted(set(data_dirs) - used)
    if unused:
        raise ConfigError(f"--data_dirs names {', '.join(unused)}, which no run of "
                          f"--config={config_name} is trained on (they use "
                          f"{', '.join(sorted(used))}): drop it")
    return {row: overrides.apply(grid, {"data_dirs": data_dirs}) for row, grid in grids.items()}


def _data_dirs_flag(grids):
    """The sweep's --data_dirs flag naming the folders of `grids`' data sets ([] if none)."""
    pairs = {grid.base.dataset: grid.base.data_dir for grid in grids
             if grid.base.data_dir is not None}
    return [f"--data_dirs={','.join(f'{k}={v}' for k, v in pairs.items())}"] if pairs else []


def _sweep_dir(dsl, output_dir, row):
    """The sweep directory of a row (<output_dir>/<row>), or output_dir for row ""."""
    return dsl.ConcatPlaceholder([output_dir, f"/{row}"]) if row else output_dir


def _sweep_command(dsl, image, config_name, row, args):
    """A component running the sweep binary on the named config in the row's directory."""

    @dsl.container_component
    def sweep_stage(output_dir: str):
        return dsl.ContainerSpec(image=image, command=["python", "-m", "pipelines.sweep"], args=[
            f"--config={config_name}",
            dsl.ConcatPlaceholder(["--output_dir=", _sweep_dir(dsl, output_dir, row)]),
            "--runner=inprocess", *args])

    return sweep_stage


class _SweepTasks:
    """The components of one sweep: train per grid point (one component per set of settings
    the grid does not vary, e.g. per `variants` entry), ntk_eval, appendix (the observables
    `grid_point.appendix_observables` adds, as a sweep run does), ensembles and report."""

    def __init__(self, dsl, image, config_name, grid, row=""):
        self.dsl, self.grid, self.row = dsl, grid, row
        self.points = grid.configs()
        python = ["python", "-m"]

        def run_dir(output_dir, run_id):
            return dsl.ConcatPlaceholder([_sweep_dir(dsl, output_dir, row),
                                          f"/{grid_point.RUNS}/", run_id])

        def train_component(fixed):
            @dsl.container_component
            def train(output_dir: str, run_id: str, alpha: str, width: str, depth: str,
                      init_seed: str, dtype: str):
                return dsl.ContainerSpec(image=image, command=python + ["pipelines.train"], args=[
                    dsl.ConcatPlaceholder(["--output_dir=", run_dir(output_dir, run_id)]),
                    dsl.ConcatPlaceholder(["--alpha=", alpha]),
                    dsl.ConcatPlaceholder(["--width=", width]),
                    dsl.ConcatPlaceholder(["--depth=", depth]),
                    dsl.ConcatPlaceholder(["--init_seed=", init_seed]),
                    dsl.ConcatPlaceholder(["--dtype=", dtype]), *fixed])
            return train

        self.train = {}
        for config in self.points:
            fixed = tuple(train_flags(config))
            if fixed not in self.train:
                self.train[fixed] = train_component(fixed)

        def run_component(stage, args):
            @dsl.container_component
            def per_run(output_dir: str, run_id: str):
                return dsl.ContainerSpec(image=image, command=python + [f"pipelines.{stage}"],
                                         args=[dsl.ConcatPlaceholder(
                                             ["--run_dir=", run_dir(output_dir, run_id)]),
                                               *args])
            return per_run

        self.ntk_eval = run_component("ntk_eval", [
            f"--{k}={v}" for k, v in (("max_train", grid.ntk_max_train),
                                      ("max_test", grid.ntk_max_test)) if v is not None])
        options = grid.appendix_options()
        self.appendix = (run_component("appendix", [
            _flag(k, v) for k, v in options.items() if v is not None])
            if options["velocity"] or options["fidelity"] or options["gram_probe"] else None)
        self.ensembles = _sweep_command(dsl, image, config_name, row,
                                        ["--noreport", *_data_dirs_flag([grid])])

        @dsl.container_component
        def report(output_dir: str):
            return dsl.ContainerSpec(image=image, command=python + ["pipelines.report"], args=[
                dsl.ConcatPlaceholder(["--sweep_dir=", _sweep_dir(dsl, output_dir, row)])])

        self.report = report

    def add(self, output_dir):
        """Add the sweep's tasks to the pipeline being defined; return its last (report)."""
        finished = []
        for config in self.points:
            where = (f"{self.row} " if self.row else "") + (
                f"a={config.alpha:.3g} h={config.width} seed={config.init_seed}")
            task = self.train[tuple(train_flags(config))](
                output_dir=output_dir, run_id=config.run_id(),
                **{k: _value(getattr(config, k)) for k in VARIED})
            task.set_display_name(f"train {where}")
            for stage, component in (("ntk_eval", self.grid.ntk and self.ntk_eval),
                                     ("appendix", self.appendix)):
                if component:
                    task = component(output_dir=output_dir, run_id=config.run_id()).after(task)
                    task.set_display_name(f"{stage} {where}")
            finished.append(task)
        tables = self.ensembles(output_dir=output_dir).after(*finished)
        tables.set_display_name(" ".join(filter(None, ("ensembles", self.row))))
        report = self.report(output_dir=output_dir).after(tables)
        report.set_display_name(" ".join(filter(None, ("report", self.row))))
        return report


def _value(value):
    """A setting as the string its flag takes (repr: a float read back is the same float)."""
    return repr(value) if isinstance(value, float) else str(value)


def compile_pipeline(config_name, output, image, grid=None, data_dirs=None):
    """Write the pipeline YAML of the named sweep (or Table 1 group, or `grid` under that
    name) to `output`, its runs reading the data sets of `data_dirs` ({dataset: folder})
    from those folders."""
    from kfp import compiler  # pylint: disable=import-outside-toplevel
    compiler.Compiler().compile(build(config_name, image, grid, data_dirs), package_path=output)


def main():
    if not FLAGS.image:
        raise ConfigError("--image is missing: give the container image the steps run in, one "
                          "holding this package and its data set (e.g. "
                          "--image=us-docker.pkg.dev/PROJECT/REPO/lazy-feature:TAG)")
    compile_pipeline(FLAGS.config, FLAGS.output, FLAGS.image,
                     data_dirs=common.data_dirs(FLAGS.data_dirs))
    print(f"pipeline: {FLAGS.output}")


if __name__ == "__main__":
    common.main("kfp_pipeline", main)
