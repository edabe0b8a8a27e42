"""absl binaries, one per stage: train, ntk_eval, ensemble, sweep, report."""
