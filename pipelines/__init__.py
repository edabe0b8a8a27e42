"""absl binaries, one per stage: train, ntk_eval, appendix, fidelity, ensemble, sweep, report,
probe, and kfp_pipeline (the sweep as a Kubeflow pipeline); each is flags → config → one
library call, run as `python -m pipelines.<stage>` (its docstring gives the commands).

`common` holds the flags and the app.run wrapper the stages share, `console` their quiet
console, `configs` the named sweeps. Importing the package runs nothing.
"""
