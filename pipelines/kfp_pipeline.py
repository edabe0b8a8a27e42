r"""A named sweep as a Kubeflow Pipelines (v2) pipeline: train → ntk_eval → ensembles → report.

Compiles the grid of a config of pipelines/configs.py into a pipeline YAML whose steps are
container components running this package's absl binaries in an image that holds the
package and its data set (e.g. built by running setup.sh):
  train      one task per grid point: `python -m pipelines.train`, every setting as a flag,
             into <output_dir>/runs/<run_id> (the sweep's layout);
  ntk_eval   after its run's train: `python -m pipelines.ntk_eval` (when the config has NTK);
  ensembles  after every run: `python -m pipelines.sweep --runner=inprocess --noreport`, which
             finds the runs complete and writes their rows, results.csv and ensembles.csv
             (eqs. 15-16 over the init seeds);
  report     `python -m pipelines.report`: the figures, fits, claims and summary.md.
The output directory, a pipeline parameter, must be storage every pod sees (gs://...):

  pip install -e .[kfp]
  python -m pipelines.kfp_pipeline --config=quick --output=quick.yaml \
      --image=us-docker.pkg.dev/my-project/lazy-feature/lazy-feature:latest

then submit quick.yaml (Vertex AI Pipelines or a Kubeflow cluster) with
output_dir=gs://my-bucket/quick. A task that is retried resumes its run from its checkpoint.
"""
from absl import flags

from lazy_feature import sweep as sweep_lib
from pipelines import common, configs

flags.DEFINE_string("config", "quick", f"A named sweep: {', '.join(configs.CONFIGS)}.")
flags.DEFINE_string("output", None, "The pipeline YAML to write.", required=True)
flags.DEFINE_string("image", "lazy-feature:latest", "The container image of the steps.")
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


def build(config_name, image):
    """The pipeline function of the named sweep, its steps running in `image`."""
    from kfp import dsl  # pylint: disable=import-outside-toplevel
    grid = configs.get(config_name)
    points = grid.configs()
    fixed = train_flags(points[0])
    if any(train_flags(c) != fixed for c in points):
        raise ValueError(f"{config_name}: grid points differ in settings outside {VARIED}")
    python = ["python", "-m"]

    def run_dir(output_dir, run_id):
        return dsl.ConcatPlaceholder([output_dir, f"/{sweep_lib.RUNS}/", run_id])

    @dsl.container_component
    def train(output_dir: str, run_id: str, alpha: str, width: str, depth: str, init_seed: str,
              dtype: str):
        return dsl.ContainerSpec(image=image, command=python + ["pipelines.train"], args=[
            dsl.ConcatPlaceholder(["--output_dir=", run_dir(output_dir, run_id)]),
            dsl.ConcatPlaceholder(["--alpha=", alpha]),
            dsl.ConcatPlaceholder(["--width=", width]),
            dsl.ConcatPlaceholder(["--depth=", depth]),
            dsl.ConcatPlaceholder(["--init_seed=", init_seed]),
            dsl.ConcatPlaceholder(["--dtype=", dtype]), *fixed])

    ntk_limits = [f"--{k}={v}" for k, v in (("max_train", grid.ntk_max_train),
                                            ("max_test", grid.ntk_max_test)) if v is not None]

    @dsl.container_component
    def ntk_eval(output_dir: str, run_id: str):
        return dsl.ContainerSpec(image=image, command=python + ["pipelines.ntk_eval"], args=[
            dsl.ConcatPlaceholder(["--run_dir=", run_dir(output_dir, run_id)]), *ntk_limits])

    @dsl.container_component
    def ensembles(output_dir: str):
        return dsl.ContainerSpec(image=image, command=python + ["pipelines.sweep"], args=[
            f"--config={config_name}", dsl.ConcatPlaceholder(["--output_dir=", output_dir]),
            "--runner=inprocess", "--noreport"])

    @dsl.container_component
    def report(output_dir: str):
        return dsl.ContainerSpec(image=image, command=python + ["pipelines.report"], args=[
            dsl.ConcatPlaceholder(["--sweep_dir=", output_dir])])

    @dsl.pipeline(name=f"lazy-feature-{config_name}",
                  description=f"The {config_name} sweep: train, ntk_eval, ensembles, report.")
    def pipeline(output_dir: str):
        finished = []
        for config in points:
            task = train(output_dir=output_dir, run_id=config.run_id(),
                         **{k: _value(getattr(config, k)) for k in VARIED})
            task.set_display_name(f"train a={config.alpha:.3g} h={config.width} "
                                  f"seed={config.init_seed}")
            if grid.ntk:
                task = ntk_eval(output_dir=output_dir, run_id=config.run_id()).after(task)
                task.set_display_name(f"ntk_eval a={config.alpha:.3g} h={config.width} "
                                      f"seed={config.init_seed}")
            finished.append(task)
        tables = ensembles(output_dir=output_dir).after(*finished)
        report(output_dir=output_dir).after(tables)

    return pipeline


def _value(value):
    """A setting as the string its flag takes (repr: a float read back is the same float)."""
    return repr(value) if isinstance(value, float) else str(value)


def compile_pipeline(config_name, output, image="lazy-feature:latest"):
    """Write the pipeline YAML of the named sweep to `output`."""
    from kfp import compiler  # pylint: disable=import-outside-toplevel
    compiler.Compiler().compile(build(config_name, image), package_path=output)


def main():
    compile_pipeline(FLAGS.config, FLAGS.output, FLAGS.image)
    print(f"pipeline: {FLAGS.output}")


if __name__ == "__main__":
    common.main("kfp_pipeline", main)
