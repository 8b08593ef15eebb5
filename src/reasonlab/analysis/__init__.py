"""Opening trained models up: logit lens, causal tracing, the decay probe, the dual-model check,
and in-context regression error curves against baselines."""
