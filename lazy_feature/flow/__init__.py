"""The dynamics that train the α-model: the interface (`interface`), gradient flow's step
control (`dynamics`) and integrators (`integrators`, `runge_kutta`, `rkc`, `switching`,
`exponential`, named in `registry`), gradient flow on the network (`network_flow`),
continuous momentum (`momentum`), Adam (`adam`), and the registry of these (`training`)."""
