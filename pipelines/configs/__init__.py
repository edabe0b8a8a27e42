"""Named sweeps: the paper's experiments at its scale, and small versions of the whole study.

Each config is a function returning a `SweepConfig`; its docstring gives the command that
runs it (`python -m pipelines.sweep --config=NAME`). By part of the paper: `paper` (Sections
2-6), `section7` (Table 1, `TABLES`, and Figs. 6, 7, 10), `appendices` (Figs. 11-16).
"""
from lazy_feature.errors import ConfigError
from lazy_feature.study import overrides
from pipelines.configs import appendices, paper, section7
from pipelines.configs.appendices import FIG13_MOMENTUM_TAUS
from pipelines.configs.section7 import FALLBACK, TABLES, fallback

CONFIGS = {**paper.CONFIGS, **section7.TABLE1, **section7.TABLE1_QUICK, **section7.FIGURES,
           **appendices.CONFIGS}
__all__ = ["CONFIGS", "FALLBACK", "FIG13_MOMENTUM_TAUS", "TABLES", "fallback", "get",
           "with_settings"]


def get(name):
    """The SweepConfig of the named config."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown config {name!r}: choose one of {', '.join(CONFIGS)}")
    return CONFIGS[name]()


def with_settings(name, settings):
    """(grid, note): the named config with `settings` in place of its own
    (`overrides.apply`); a FALLBACK config whose data set is absent runs on Fashion-MNIST, and
    the note says so (None otherwise)."""
    grid, note = fallback(name, overrides.apply(get(name), settings))
    if note is not None:  # the settings again, for Fashion-MNIST's folder in data_dirs
        grid = overrides.apply(grid, settings)
    return grid, note
