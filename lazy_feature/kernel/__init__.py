"""The empirical neural tangent kernel Θ (eq. 5): its Gram matrices (`ntk`, from one
structured per-layer path, `structured`, or per-example Jacobians), its norms and drift
(`drift`, Section 5, and live during training), and the frozen-kernel dynamics
(`frozen`, Appendix A, eqs. 25-28)."""
