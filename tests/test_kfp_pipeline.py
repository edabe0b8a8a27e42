"""The Kubeflow Pipelines definition: the tiny sweep compiles to the expected DAG."""
import dataclasses
import re

import pytest

from lazy_feature.config import TrainConfig
from pipelines import configs, kfp_pipeline

yaml = pytest.importorskip("yaml")
pytest.importorskip("kfp", reason="pip install -e .[kfp]")

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


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
        kind = getattr(_FIELDS[name].type, "__name__", "str")  # "str | None": a string
        typed[name] = (value if isinstance(value, bool) else int(value) if kind == "int"
                       else float(value) if kind == "float" else value)
    return TrainConfig(**typed)


def test_tiny_sweep_compiles_to_train_ntk_eval_ensembles_report(tmp_path):
    output = tmp_path / "tiny.yaml"
    kfp_pipeline.compile_pipeline("tiny", str(output), image="registry/lazy-feature:1")
    spec = yaml.safe_load(output.read_text())
    assert spec["root"]["inputDefinitions"]["parameters"] == {
        "output_dir": {"parameterType": "STRING"}}
    executors = spec["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"]

    def container(task):
        component = spec["components"][task["componentRef"]["name"]]
        return executors[component["executorLabel"]]["container"]

    by_stage = {}
    for name, task in tasks.items():
        command = container(task)["command"]
        assert command[:2] == ["python", "-m"] and container(task)["image"] == (
            "registry/lazy-feature:1")
        by_stage.setdefault(command[2], []).append(name)
    grid = configs.get("tiny").configs()
    assert {k: len(v) for k, v in by_stage.items()} == {
        "pipelines.train": len(grid), "pipelines.ntk_eval": len(grid),
        "pipelines.sweep": 1, "pipelines.report": 1}

    def constants(task):
        return {k: v["runtimeValue"]["constant"]
                for k, v in task["inputs"]["parameters"].items() if "runtimeValue" in v}

    # Each train task runs one grid point (its run id, rebuilt from the flags it passes).
    trained = {}
    for name in by_stage["pipelines.train"]:
        parameters = constants(tasks[name])
        run_id = parameters.pop("run_id")
        assert _config(container(tasks[name])["args"], parameters).run_id() == run_id
        trained[run_id] = name
    assert set(trained) == {c.run_id() for c in grid}
    # ntk_eval after its own run's train; the ensembles after every ntk_eval; then the report.
    for name in by_stage["pipelines.ntk_eval"]:
        run_id = constants(tasks[name])["run_id"]
        assert tasks[name]["dependentTasks"] == [trained[run_id]]
    (tables,) = by_stage["pipelines.sweep"]
    assert sorted(tasks[tables]["dependentTasks"]) == sorted(by_stage["pipelines.ntk_eval"])
    assert container(tasks[tables])["args"][:1] == ["--config=tiny"]
    assert {"--runner=inprocess", "--noreport"} <= set(container(tasks[tables])["args"])
    (report,) = by_stage["pipelines.report"]
    assert tasks[report]["dependentTasks"] == [tables]
    # Every step writes under the pipeline's output_dir parameter.
    for task in tasks.values():
        assert task["inputs"]["parameters"]["output_dir"] == {
            "componentInputParameter": "output_dir"}
        assert any(re.search(r"output_dir'\]", arg) for arg in container(task)["args"])
