"""gymnax's `Environment` base class and spaces: gymnax's own when it is installed (`pip install prada-jax[gym]`),
otherwise a signature-compatible copy of the parts prada_jax.env uses (gymnax 1.0.1: `step` auto-resets and returns
(obs, state, reward, terminated, truncated, info); `reset`; `step_env` / `reset_env` are the subclass's).

gymnax is optional because it requires gymnasium and seaborn (pandas), which nothing else here needs.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

try:  # pragma: no cover - depends on the installation
    from gymnax.environments.environment import Environment
    from gymnax.environments.spaces import Box, Discrete

    HAVE_GYMNAX = True
except ImportError:
    HAVE_GYMNAX = False

    class Environment:  # noqa: D101 - mirrors gymnax.environments.environment.Environment
        """Minimal copy of gymnax 1.0.1's `Environment` (auto-resetting `step`, `reset`)."""

        @property
        def default_params(self):
            raise NotImplementedError

        @partial(jax.jit, static_argnames=("self",))
        def step(self, key: jax.Array, state: Any, action: Any, params: Any = None):
            """Step transition with automatic reset; returns (obs, state, reward, terminated, truncated, info)."""
            if params is None:
                params = self.default_params
            key_step, key_reset = jax.random.split(key)
            obs_st, state_st, reward, terminated, info = self.step_env(key_step, state, action, params)
            truncated = self.is_truncated(state_st, params)
            done = jnp.logical_or(terminated, truncated)
            obs_re, state_re = self.reset_env(key_reset, params)
            state = jax.tree.map(lambda x, y: jax.lax.select(done, x, y), state_re, state_st)
            obs = jax.tree.map(lambda x, y: jax.lax.select(done, x, y), obs_re, obs_st)
            info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": obs_st}
            return obs, state, reward, terminated, truncated, info

        @partial(jax.jit, static_argnames=("self",))
        def reset(self, key: jax.Array, params: Any = None):
            if params is None:
                params = self.default_params
            return self.reset_env(key, params)

        def step_env(self, key, state, action, params):
            raise NotImplementedError

        def reset_env(self, key, params):
            raise NotImplementedError

        def is_truncated(self, state, params) -> jax.Array:
            return state.time >= params.max_steps_in_episode

        @property
        def name(self) -> str:
            return type(self).__name__

        @property
        def num_actions(self) -> int:
            raise NotImplementedError

        def action_space(self, params):
            raise NotImplementedError

        def observation_space(self, params):
            raise NotImplementedError

        def state_space(self, params):
            raise NotImplementedError

    class Discrete:
        """gymnax's `Discrete` (integers in [0, n))."""

        def __init__(self, num_categories: int, *, dtype: Any = jnp.int32):
            self.n = num_categories
            self.shape = ()
            self.dtype = jnp.dtype(dtype)

        def sample(self, key: jax.Array) -> jax.Array:
            return jax.random.randint(key, self.shape, 0, self.n, dtype=self.dtype)

        def contains(self, x) -> jax.Array:
            x = jnp.asarray(x, self.dtype)
            return jnp.logical_and(x >= 0, x < self.n)

    class Box:
        """gymnax's `Box` (an array within [low, high])."""

        def __init__(self, low, high, shape, dtype=jnp.float32):
            self.low, self.high, self.shape, self.dtype = low, high, shape, dtype

        def sample(self, key: jax.Array) -> jax.Array:
            return jax.random.uniform(key, self.shape, minval=self.low, maxval=self.high).astype(self.dtype)

        def contains(self, x) -> jax.Array:
            return jnp.logical_and(jnp.all(x >= self.low), jnp.all(x <= self.high))


class MultiDiscrete:
    """C independent choices among n (gymnax has no multi-discrete space; its `Discrete` methods per entry)."""

    def __init__(self, num_categories: int, shape: tuple, dtype=jnp.int32):
        self.n, self.shape, self.dtype = num_categories, tuple(shape), jnp.dtype(dtype)

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.randint(key, self.shape, 0, self.n, dtype=self.dtype)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x, self.dtype)
        return jnp.logical_and(jnp.all(x >= 0), jnp.all(x < self.n)) & (x.shape == self.shape)
