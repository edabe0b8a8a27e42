"""The Kubeflow Pipelines definition: the tiny sweep compiles to the expected DAG."""
import dataclasses
import json
import re

import pytest

from lazy_feature.run.config import TrainConfig
from pipelines import configs, kfp_pipeline
from tests.helpers import stage_in_process

yaml = pytest.importorskip("yaml")
pytest.importorskip("kfp", reason="pip install -e .[kfp]")

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# The binary runs in-process (`stage_in_process`) as __main__ beside the module imported above.
_RUN_AS_MAIN = pytest.mark.filterwarnings(
    "ignore:'pipelines.kfp_pipeline' found in sys.modules:RuntimeWarning")


def _config(args, parameters):
    """The TrainConfig a train task runs: its constant flags and its parameters."""
    values = {}
    for arg in args:
        if arg.startswith("--") and "{{" not in arg and "Concat" not in arg:
            name, _, value = arg[2:].partition("=")
            if not _:
                name, value = (name[2:], False) if name not in _FIELDS else (name, True)
            values[name] = value
    values.update(parameters)
    typed = {}
    for name, value in values.items():
        kind = _FIELDS[name].type
        kind = getattr(kind, "__name__", None) or str(kind)  # e.g. "int", "float | None"
        typed[name] = (value if isinstance(value, bool) else int(value) if kind.startswith("int")
                       else float(value) if kind.startswith("float") else value)
    return TrainConfig(**typed)


class _Compiled:
    """A compiled pipeline YAML: its tasks, each task's container and constant inputs."""

    def __init__(self, path):
        self.spec = yaml.safe_load(path.read_text())
        self.tasks = self.spec["root"]["dag"]["tasks"]

    def container(self, name):
        component = self.spec["components"][self.tasks[name]["componentRef"]["name"]]
        executors = self.spec["deploymentSpec"]["executors"]
        return executors[component["executorLabel"]]["container"]

    def constants(self, name):
        return {k: v["runtimeValue"]["constant"]
                for k, v in self.tasks[name]["inputs"]["parameters"].items()
                if "runtimeValue" in v}

    def by_stage(self):
        found = {}
        for name in self.tasks:
            command = self.container(name)["command"]
            assert command[:2] == ["python", "-m"]
            found.setdefault(command[2], []).append(name)
        return found

    def trained(self, names):
        """{run_id: task name} of train tasks, each checked to run its run id's config."""
        found = {}
        for name in names:
            parameters = self.constants(name)
            run_id = parameters.pop("run_id")
            assert _config(self.container(name)["args"], parameters).run_id() == run_id
            found[run_id] = name
        return found

    def after(self, name):
        return sorted(self.tasks[name].get("dependentTasks", []))


def test_tiny_sweep_compiles_to_train_ntk_eval_ensembles_report(tmp_path):
    output = tmp_path / "tiny.yaml"
    kfp_pipeline.compile_pipeline("tiny", str(output), image="registry/lazy-feature:1")
    compiled = _Compiled(output)
    spec, tasks = compiled.spec, compiled.tasks
    assert spec["root"]["inputDefinitions"]["parameters"] == {
        "output_dir": {"parameterType": "STRING"}}
    assert {compiled.container(name)["image"] for name in tasks} == {"registry/lazy-feature:1"}
    by_stage = compiled.by_stage()
    grid = configs.get("tiny").configs()
    assert {k: len(v) for k, v in by_stage.items()} == {
        "pipelines.train": len(grid), "pipelines.ntk_eval": len(grid),
        "pipelines.sweep": 1, "pipelines.report": 1}
    # Each train task runs one grid point (its run id, rebuilt from the flags it passes).
    trained = compiled.trained(by_stage["pipelines.train"])
    assert set(trained) == {c.run_id() for c in grid}
    # ntk_eval after its own run's train; the ensembles after every ntk_eval; then the report.
    for name in by_stage["pipelines.ntk_eval"]:
        assert compiled.after(name) == [trained[compiled.constants(name)["run_id"]]]
    (tables,) = by_stage["pipelines.sweep"]
    assert compiled.after(tables) == sorted(by_stage["pipelines.ntk_eval"])
    assert compiled.container(tables)["args"][:1] == ["--config=tiny"]
    assert {"--runner=inprocess", "--noreport"} <= set(compiled.container(tables)["args"])
    (report,) = by_stage["pipelines.report"]
    assert compiled.after(report) == [tables]
    # Every step writes under the pipeline's output_dir parameter.
    for name, task in tasks.items():
        assert task["inputs"]["parameters"]["output_dir"] == {
            "componentInputParameter": "output_dir"}
        assert any(re.search(r"output_dir'\]", arg) for arg in compiled.container(name)["args"])


def _directory(args, flag, run_id=None):
    """The directory a task's --flag names, its output_dir parameter written as OUT (and its
    run_id parameter as `run_id`)."""
    def text(part):
        return part if isinstance(part, str) else "".join(map(text, part["Concat"]))

    [arg] = [a for a in args if a.startswith(f'{{"Concat": ["--{flag}="')]
    return text(json.loads(arg)).removeprefix(f"--{flag}=").replace(
        "{{$.inputs.parameters['output_dir']}}", "OUT").replace(
        "{{$.inputs.parameters['run_id']}}", str(run_id))


# Where the pods of test_table1_group_... find two data sets (through --data_dirs).
_DATA_DIRS = {"cifar10": "/mnt/data/cifar10", "mnist": "/mnt/data/mnist"}


@_RUN_AS_MAIN
def test_table1_group_compiles_to_every_rows_sweep_then_the_table(tmp_path):
    output = tmp_path / "table1_quick.yaml"
    result = stage_in_process("kfp_pipeline", "--config=table1_quick", f"--output={output}",
                              "--image=registry/lazy-feature:1",
                              "--data_dirs=" + ",".join(f"{k}={v}" for k, v in _DATA_DIRS.items()))
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = _Compiled(output)
    by_stage = compiled.by_stage()
    rows = configs.TABLES["table1_quick"]
    # Per row: its grid's train tasks (ntk off), its ensembles and its report; then the table.
    points = {row: make().configs() for row, make in rows.items()}
    assert {k: len(v) for k, v in by_stage.items()} == {
        "pipelines.train": sum(map(len, points.values())),
        "pipelines.sweep": len(rows) + 1, "pipelines.report": len(rows)}
    trained = compiled.trained(by_stage["pipelines.train"])
    assert len(trained) == sum(map(len, points.values()))
    ensembles = {}
    for name in by_stage["pipelines.sweep"]:
        args = compiled.container(name)["args"]
        config, where = args[0], _directory(args, "output_dir")
        if config == "--config=table1_quick":
            table = name
            continue
        row = where.removeprefix("OUT/")
        assert config == f"--config=table1_{row}_quick" and "--noreport" in args
        # Each row's runs lie under OUT/<row>, its ensembles after all of them.
        assert compiled.after(name) == sorted(trained[c.run_id()] for c in points[row])
        for config in points[row]:
            train_args = compiled.container(trained[config.run_id()])["args"]
            run_dir = _directory(train_args, "output_dir", config.run_id())
            assert run_dir == f"OUT/{row}/runs/{config.run_id()}"
            # Exactly the runs on a data set of --data_dirs read it from its folder.
            assert [a for a in train_args if a.startswith("--data_dir")] == (
                [f"--data_dir={_DATA_DIRS[config.dataset]}"] if config.dataset in _DATA_DIRS
                else [])
        # The row's sweep task (its rows, ensembles) finds the data set there too.
        dataset = points[row][0].dataset
        assert [a for a in args if a.startswith("--data_dir")] == (
            [f"--data_dirs={dataset}={_DATA_DIRS[dataset]}"] if dataset in _DATA_DIRS else [])
        ensembles[name] = row
    assert sorted(ensembles.values()) == sorted(rows)
    reports = {}
    for name in by_stage["pipelines.report"]:
        [tables] = compiled.after(name)
        reports[name] = ensembles[tables]
        assert _directory(compiled.container(name)["args"], "sweep_dir") == f"OUT/{reports[name]}"
    # The table after every row's report, even those that failed (a row whose data the
    # cluster lacks): it trains nothing and says "data not found" (--report_only).
    assert compiled.after(table) == sorted(reports)
    assert compiled.tasks[table]["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    args = compiled.container(table)["args"]
    assert _directory(args, "output_dir") == "OUT" and "--report_only" in args
    # The table looks for every row's data where that row's runs read them.
    [data_dirs] = [a for a in args if a.startswith("--data_dir")]
    assert sorted(data_dirs.removeprefix("--data_dirs=").split(",")) == sorted(
        f"{k}={v}" for k, v in _DATA_DIRS.items())
    assert {c.dataset for grid in points.values() for c in grid} > set(_DATA_DIRS)


@_RUN_AS_MAIN
@pytest.mark.parametrize("data_dirs, error", [
    ("mnist", "--data_dirs takes dataset=DIR pairs separated by commas, got 'mnist'"),
    ("fashion_mnist=/mnt/f,=/mnt/x", "--data_dirs takes dataset=DIR pairs separated by "
                                     "commas, got '=/mnt/x'"),
    ("fashion_mnist=/mnt/f,cifar10=/mnt/c", "--data_dirs names cifar10, which no run of "
     "--config=tiny is trained on (they use fashion_mnist): drop it")])
def test_a_bad_data_dirs_is_a_one_line_error_and_writes_nothing(tmp_path, data_dirs, error):
    output = tmp_path / "tiny.yaml"
    result = stage_in_process("kfp_pipeline", "--config=tiny", f"--output={output}",
                              "--image=registry/lazy-feature:1", f"--data_dirs={data_dirs}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"kfp_pipeline: error: {error}"
    assert not output.exists()


def test_appendix_observables_and_variants_compile_to_their_tasks(tmp_path):
    grid = dataclasses.replace(configs.get("tiny"), ntk=False, velocity=True,
                               velocity_max_test=50, fidelity=True, gram_probe=8,
                               variants=({}, {"bias_scale": 0.1}))
    output = tmp_path / "appendix.yaml"
    kfp_pipeline.compile_pipeline("tiny_appendix", str(output), "registry/lazy-feature:1",
                                grid=grid)
    compiled = _Compiled(output)
    by_stage = compiled.by_stage()
    points = grid.configs()
    assert {k: len(v) for k, v in by_stage.items()} == {
        "pipelines.train": len(points), "pipelines.appendix": len(points),
        "pipelines.sweep": 1, "pipelines.report": 1}
    # Every point of both variants is trained with its own settings.
    trained = compiled.trained(by_stage["pipelines.train"])
    assert set(trained) == {c.run_id() for c in points}
    assert {c.bias_scale for c in points} == {0.0, 0.1}
    # After its run's train, the observables grid_point.appendix_observables adds to a sweep run.
    for name in by_stage["pipelines.appendix"]:
        args = compiled.container(name)["args"]
        assert set(args[1:]) == {"--velocity", "--velocity_max_test=50", "--fidelity",
                                 "--gram_probe=8"}
        run_id = compiled.constants(name)["run_id"]
        assert compiled.after(name) == [trained[run_id]]
        assert _directory(args, "run_dir", run_id) == f"OUT/runs/{run_id}"
    (tables,) = by_stage["pipelines.sweep"]
    assert compiled.after(tables) == sorted(by_stage["pipelines.appendix"])


def test_no_image_is_a_one_line_error_and_writes_nothing(tmp_path):
    # The steps would otherwise run in a placeholder image that no cluster holds.
    output = tmp_path / "tiny.yaml"
    result = stage_in_process("kfp_pipeline", "--config=tiny", f"--output={output}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "kfp_pipeline: error: --image is missing: give the container image")
    assert not output.exists()
