"""prada-jax: a JAX-vectorised, trace-driven simulator of PRADA (two-stage SLM/LLM edge collaboration)."""

__version__ = "0.1.0"
