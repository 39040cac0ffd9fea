"""Network shapes and the FiLM / BatchNorm wiring of paper section 5.1.1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prada_jax.learn.nets import AuxRegressor, PolicyNet, ValueNet


def _dense_shapes(params):
    return [np.shape(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0] if "kernel" in str(path)]


def test_policy_and_value_are_four_dense_layers_512_256_512():
    x = jnp.ones((3, 7))
    pp = PolicyNet().init(jax.random.PRNGKey(0), x)
    vp = ValueNet().init(jax.random.PRNGKey(1), x)
    assert _dense_shapes(pp) == [(7, 512), (512, 256), (256, 512), (512, 2)]
    assert _dense_shapes(vp) == [(7, 512), (512, 256), (256, 512), (512, 1)]
    probs = jax.nn.softmax(PolicyNet().apply(pp, x))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert ValueNet().apply(vp, x).shape == (3,)


def test_aux_regressor_film_matches_numpy():
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    net = AuxRegressor(use_film=True)
    variables = net.init(jax.random.PRNGKey(1), x)
    p = variables["params"]
    assert _dense_shapes(p) == [(4, 256), (256, 512), (512, 1), (4, 256), (256, 8)]  # 3 dense + FiLM's 2
    assert "BatchNorm_0" in variables["batch_stats"]
    out = np.asarray(net.apply(variables, x, train=False))
    # Hand computation: BatchNorm in inference mode (running mean 0, var 1 at init), FiLM, MLP with SiLU.
    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    bn = p["BatchNorm_0"]
    h = np.asarray(x) / np.sqrt(1 + 1e-5) * np.asarray(bn["scale"]) + np.asarray(bn["bias"])
    film = p["FiLM_0"]
    g = silu(h @ film["Dense_0"]["kernel"] + film["Dense_0"]["bias"])
    g = g @ film["Dense_1"]["kernel"] + film["Dense_1"]["bias"]
    h = h * (1 + g[:, :4]) + g[:, 4:]
    h = silu(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    h = silu(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
    ref = (h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"])[:, 0]
    np.testing.assert_allclose(out, ref, rtol=2e-4, atol=2e-5)


def test_delay_net_has_no_film_and_batchnorm_trains():
    x = jnp.linspace(0.1, 3.0, 16)[:, None]
    net = AuxRegressor(use_film=False)
    variables = net.init(jax.random.PRNGKey(0), x)
    assert "FiLM_0" not in variables["params"]
    assert _dense_shapes(variables["params"]) == [(1, 256), (256, 512), (512, 1)]
    _, updates = net.apply(variables, x, train=True, mutable=["batch_stats"])
    mean = updates["batch_stats"]["BatchNorm_0"]["mean"]
    np.testing.assert_allclose(mean, 0.1 * np.mean(np.asarray(x)), rtol=1e-5)  # momentum 0.9 from 0
