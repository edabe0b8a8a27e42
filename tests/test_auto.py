"""auto's choice (`lazy_feature.flow.auto`): per network family it was measured on and band of
√h·α, what came as close to the reference as Euler in the fewest evaluations; Euler on any
other network; config.json records why."""
import math

import pytest

from lazy_feature.flow import auto, registry
from lazy_feature.run import artifact, runner
from lazy_feature.run.config import TrainConfig

from helpers import small_task


def test_every_family_chooses_a_registered_integrator_at_every_sqrt_h_alpha():
    for family in auto.FAMILIES:
        bounds = [band.below for band in family.bands]
        assert bounds == sorted(bounds) and math.isinf(bounds[-1]), family.name
        for band in family.bands:
            assert band.integrator in registry.INTEGRATORS and band.evidence, family.name


@pytest.mark.parametrize("settings, sqrt_h_alpha, integrator", [
    ({}, 1e-4, "bogacki_shampine_etdrk4"),  # the paper's FC net (L = 3)
    ({}, 9.99, "bogacki_shampine_etdrk4"),
    ({}, 10.0, "etdrk4"),  # (a band's bound is in the band above it)
    (dict(depth=2), 1e-4, "bogacki_shampine_etdrk4"),
    (dict(depth=5), 1e-4, "bogacki_shampine"),  # where bogacki_shampine_etdrk4 missed
    (dict(depth=9), 1e-2, "bogacki_shampine_etdrk4"),
    (dict(depth=9), 1e4, "etdrk4"),
    (dict(depth=12), 1e-4, "euler"),  # deeper than measured
    (dict(activation_beta=10.0), 1e-4, "bogacki_shampine_etdrk4"),
    (dict(activation_beta=10.0), 1e4, "etdrk4"),
    (dict(activation_beta=20.0), 1.0, "euler"),  # sharper than measured
    (dict(activation_beta=10.0, depth=5), 1.0, "euler"),  # two variations never measured
    (dict(bias_scale=0.1, depth=2), 1.0, "euler"),
    (dict(bias_scale=0.1), 1e-2, "euler"),  # nothing matched Euler with biases there
    (dict(bias_scale=0.1), 1.0, "bogacki_shampine_etdrk4"),
    (dict(centered=False), 1e-4, "bogacki_shampine_etdrk4"),
    (dict(centered=False), 1e4, "bogacki_shampine_rkc"),  # where etdrk4 missed
    (dict(activation="tanh"), 1.0, "euler"),  # never measured
    (dict(activation="relu"), 1.0, "euler"),  # kinks: Euler's jump rule
    (dict(architecture="cnn"), 0.5, "euler"),
    (dict(architecture="cnn"), 1.0, "bogacki_shampine_etdrk4"),
    (dict(architecture="cnn"), 1e4, "etdrk4"),
    (dict(architecture="wide_resnet", depth=10), 1.0, "euler"),  # nothing matched Euler
    (dict(architecture="wide_resnet", depth=10), 1e4, "euler"),
])
def test_auto_takes_what_was_measured_on_the_network(settings, sqrt_h_alpha, integrator):
    config = TrainConfig(width=64, alpha=sqrt_h_alpha / 8, **settings)
    choice = config.integrator_choice()
    assert config.resolved().integrator == choice.integrator == integrator
    assert auto.BENCHMARK in choice.why or "jump rule" in choice.why
    if integrator == "euler" and "relu" not in settings.values():
        assert "benchmarked" in choice.why or "Euler" in choice.why


def test_the_why_names_the_family_and_band():
    why = TrainConfig(width=64, alpha=1e-4 / 8, depth=5).integrator_choice().why
    assert why.startswith("FC, L = 4-9, softplus β = 5, √h·α < 1e-2: ")
    why = TrainConfig(width=64, alpha=1 / 8, bias_scale=0.1).integrator_choice().why
    assert why.startswith("FC, L = 3, with biases, 1 ≤ √h·α < 10: ")
    assert TrainConfig(integrator="euler").integrator_choice() is None  # named: no choice


@pytest.mark.slow
def test_config_json_records_why_auto_took_its_integrator_and_keeps_it(tmp_path):
    task = small_task()
    config = TrainConfig(n_train=10, n_test=200, width=8, alpha=0.5, dtype="float64",
                         max_steps=3)
    runner.train(config, str(tmp_path / "auto"), task=task)
    stored = artifact.read_json(str(tmp_path / "auto" / artifact.CONFIG))
    assert stored[artifact.INTEGRATOR_CHOICE] == config.integrator_choice().why
    assert stored["run_id"] == config.run_id()  # the record is not part of the run's id
    loaded = artifact.load_config(str(tmp_path / "auto"))
    assert loaded.run_id() == config.run_id() and loaded.integrator == stored["integrator"]
    # Reopened with larger budgets under the stored (named) config: the record stays.
    runner.reopen(str(tmp_path / "auto"), loaded)
    assert artifact.read_json(str(tmp_path / "auto" / artifact.CONFIG))[
        artifact.INTEGRATOR_CHOICE] == stored[artifact.INTEGRATOR_CHOICE]
    named = TrainConfig(n_train=10, n_test=200, width=8, alpha=0.5, dtype="float64",
                        max_steps=3, integrator="euler")
    runner.train(named, str(tmp_path / "named"), task=task)
    assert artifact.INTEGRATOR_CHOICE not in artifact.read_json(
        str(tmp_path / "named" / artifact.CONFIG))
