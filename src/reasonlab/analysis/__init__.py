"""Opening trained models up: logit lens, causal tracing (and, later, the dual-model check)."""
