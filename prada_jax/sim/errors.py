"""The simulator API's one error type (its own module, so every part of prada_jax.sim can raise it)."""


class SimParamsError(ValueError):
    """A simulator parameter or configuration is out of range."""
