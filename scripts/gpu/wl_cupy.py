"""CuPy under the library: cupy.matmul in fp32, fp16 and batched fp32.

    wl_cupy.py --result OUT.json

Writes the calls made and the SHA-256 of each output.
"""

import argparse
import hashlib
import json

M, K, N, BATCH = 384, 512, 256, 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--result", required=True)
    args = ap.parse_args()
    import cupy as cp

    rs = cp.random.RandomState(seed=7)
    a32, b32 = rs.standard_normal((M, K), dtype=cp.float32), rs.standard_normal((K, N), dtype=cp.float32)
    a3, b3 = rs.standard_normal((BATCH, M, K), dtype=cp.float32), rs.standard_normal((BATCH, K, N), dtype=cp.float32)
    cases = [
        ("matmul fp32", lambda: cp.matmul(a32, b32)),
        ("matmul fp16", lambda: cp.matmul(a32.astype(cp.float16), b32.astype(cp.float16))),
        ("matmul fp32 batched", lambda: cp.matmul(a3, b3)),
    ]
    ops = []
    for name, fn in cases:
        rec = {"op": name}
        try:
            out = fn()
            cp.cuda.runtime.deviceSynchronize()
            rec["sha256"] = hashlib.sha256(cp.asnumpy(out).tobytes()).hexdigest()
        except Exception as e:
            rec["error"] = "%s: %s" % (type(e).__name__, e)
        ops.append(rec)
    result = {"cupy": cp.__version__, "ops": ops, "issued": sum("sha256" in r for r in ops)}
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
