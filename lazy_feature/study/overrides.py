"""Settings that replace a named sweep's: its grid axes, its base TrainConfig's settings, and
the dynamics settings routed to the rows of a Table 1 group trained by that dynamics.

A settings dict maps a field name of `SweepConfig` (a grid axis, `GRID_AXES`) or of
`TrainConfig` to its new value; `data_dirs` ({dataset: folder}) says where the runs on a data
set read it. The sweep binary builds one from its flags (pipelines/sweep.py).
"""
import dataclasses

from lazy_feature.errors import ConfigError
from lazy_feature.flow import training
from lazy_feature.run.config import TrainConfig

# The grid axes a setting can replace, with the type of their values; the α grid replaces
# the √h·α grid and the other way round.
GRID_AXES = {"widths": int, "alphas": float, "sqrt_h_alphas": float, "seeds": int}
_OTHER_AXIS = {"alphas": "sqrt_h_alphas", "sqrt_h_alphas": "alphas"}
# The settings only one training dynamics takes (Section 7; TrainConfig refuses them under
# another dynamics), from the dynamics registry.
DYNAMICS_SETTINGS = {kind.name: kind.settings for kind in training.DYNAMICS.values()
                     if kind.settings}
DYNAMICS_NAMES = ("dynamics", *(name for names in DYNAMICS_SETTINGS.values() for name in names))
_TRAIN_FIELDS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def apply(grid, settings):
    """`grid` (a SweepConfig) with `settings` applied: a grid axis replaces the grid's, a
    TrainConfig setting its base's (a new architecture with its default depth; a new dynamics
    with the settings of the base's own dynamics back to their defaults), and `data_dirs`
    the base's data_dir where it names the base's data set."""
    unknown = sorted(set(settings) - set(_TRAIN_FIELDS) - set(GRID_AXES) - {"data_dirs"})
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(unknown)}: a sweep takes its grid axes "
                          f"({', '.join(GRID_AXES)}) and TrainConfig's settings")
    base = {name: value for name, value in settings.items()
            if name in _TRAIN_FIELDS and name not in DYNAMICS_NAMES}
    if "architecture" in base:
        base.setdefault("depth", None)
    data_dir = (settings.get("data_dirs") or {}).get(grid.base.dataset)
    if data_dir is not None:
        base["data_dir"] = data_dir
    base.update(_dynamics_settings(grid.base, {name: value for name, value in settings.items()
                                               if name in DYNAMICS_NAMES}))
    changes = {"base": dataclasses.replace(grid.base, **base)} if base else {}
    for name in GRID_AXES:  # in this order: of α and √h·α given both, √h·α's grid holds
        if name in settings:
            changes[name] = tuple(settings[name])
            if name in _OTHER_AXIS:
                changes[_OTHER_AXIS[name]] = ()
    return dataclasses.replace(grid, **changes)


def _dynamics_settings(base, given):
    """The dynamics settings `given` for a grid of `base`, and, when they change its dynamics,
    the settings of its own dynamics (e.g. an Adam row's epochs) back to their defaults."""
    if given.get("dynamics", base.dynamics) == base.dynamics:
        return given
    own = DYNAMICS_SETTINGS.get(base.dynamics, ())
    return dict({name: _TRAIN_FIELDS[name] for name in own}, **given)


def route_dynamics(grids, settings, group):
    """{row: its settings} for a group's rows ({row: SweepConfig}): the dynamics settings
    apply to the rows trained by their dynamics (`DYNAMICS_SETTINGS`), or with `dynamics`
    every one to every row; the other settings to every row. A dynamics setting that no row
    of the group (named `group`) takes is a ConfigError."""
    given = {name: value for name, value in settings.items() if name in DYNAMICS_NAMES}
    shared = {name: value for name, value in settings.items() if name not in DYNAMICS_NAMES}
    if "dynamics" in given:
        return {row: dict(settings) for row in grids}
    routed = {row: {name: value for name, value in given.items()
                    if name in DYNAMICS_SETTINGS.get(grid.base.dynamics, ())}
              for row, grid in grids.items()}
    for name in given:
        if not any(name in row_settings for row_settings in routed.values()):
            [owner] = [d for d, names in DYNAMICS_SETTINGS.items() if name in names]
            raise ConfigError(f"--{name} is a setting of --dynamics={owner}, and no row of "
                              f"--config={group} is trained by {owner}: drop it, or give "
                              "--dynamics to set every row's")
    return {row: dict(shared, **routed[row]) for row in grids}
