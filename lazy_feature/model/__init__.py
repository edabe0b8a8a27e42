"""The networks and what they are trained as: activations (`activations`), NTK-parametrized
layers (`layers`) and architectures f(w, x) (`architectures`, eqs. 10-14 and Section 7), the
per-pattern losses of eq. 7 (`losses`), the precision policy (`precision`), and the centered
α-model F = α[f(w, x) − f(w0, x)] (`alpha_model`, eq. 6) with its replica helpers
(`replicas`). Nothing here knows how the model is trained (that is `lazy_feature.flow`)."""
