"""Many runs and what the paper reads off them: ensembles (`ensemble`, eqs. 15-16), the
observables (`observables`, `velocity`, `appendix`, `fidelity`, `ntk_eval`), grids over the
(α, h) plane (`sweep`, its settings `overrides` and the stage around it, `stage`), fits and
exponents (`fits`, `exponents`), the paper's claims (`claims`), Table 1 (`table1`), the
figures (`figures`) and the report (`report`)."""
