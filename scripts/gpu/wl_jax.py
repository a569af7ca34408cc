"""JAX under the library: jnp.dot in bf16, jitted, executed a fixed number of times.

    wl_jax.py --result OUT.json

XLA_FLAGS comes from the environment (the step runs XLA's default path and a
cuBLAS-only one). Writes the executions, the output's SHA-256 and what JAX ran on.
"""

import argparse
import hashlib
import json
import os

M, K, N, EXECUTIONS = 512, 1024, 768, 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--result", required=True)
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (M, K), dtype=jnp.float32).astype(jnp.bfloat16)
    b = jax.random.normal(kb, (K, N), dtype=jnp.float32).astype(jnp.bfloat16)
    dot = jax.jit(lambda x, y: jnp.dot(x, y))
    out = None
    for _ in range(EXECUTIONS):
        out = dot(a, b)
        out.block_until_ready()
    host = np.asarray(out)
    result = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "executions": EXECUTIONS,
        "shape": [M, K, N],
        "out_dtype": str(host.dtype),
        "sha256": hashlib.sha256(host.tobytes()).hexdigest(),
    }
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
