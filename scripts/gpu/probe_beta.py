"""How cuBLAS rounds D = alpha * A @ B + beta * C for bf16 and f16 outputs.

Runs PyTorch's addmm (in place on C, as addmm_ does, and out of place) for several
shapes, scalars, BLAS back ends and reduced-precision-reduction settings, and compares
every output entry with two models computed in float64 from the same inputs:

  once    D = rd(alpha * AB + beta * C)           one rounding to D's type
  product D = rd(rd(alpha * AB) + beta * C)       the product rounded to D's type first

(AB exact in float64 up to about 2^-40 relative, far below D's spacing). For each case
it prints the share of entries equal to each model and the largest difference from
`once` in units of D's spacing at the entry. Needs only PyTorch and a CUDA GPU:

    python3 scripts/gpu/probe_beta.py [--json OUT]
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write every case's numbers here")
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    m = torch.backends.cuda.matmul
    rows = []
    header = "%-5s %-16s %-9s %-9s %-7s %-8s %7s %7s %9s" % (
        "type", "m x n x k", "alpha,beta", "backend", "rpr", "op", "once%", "prod%", "max ulp")
    print(header)
    for dt, name in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
        for (M, N, K) in ((256, 384, 512), (16, 4096, 4096), (2048, 1024, 1024), (4096, 4096, 4096)):
            a = torch.randn(M, K, device="cuda").to(dt)
            b = torch.randn(K, N, device="cuda").to(dt)
            c = (4 * torch.randn(M, N, device="cuda")).to(dt)
            ab = a.double() @ b.double()
            for alpha, beta in ((1.0, 1.0), (0.5, 1.0), (2.0, 0.5)):
                once = (alpha * ab + beta * c.double()).to(dt)
                product = ((alpha * ab).to(dt).double() + beta * c.double()).to(dt)
                # D's spacing just above |once|: the next value of D's type up
                mag = once.abs()
                spacing = (mag.view(torch.int16) + 1).view(dt).double() - mag.double()
                for backend in ("cublas", "cublaslt"):
                    torch.backends.cuda.preferred_blas_library(backend)
                    for rpr in (True, False):
                        m.allow_bf16_reduced_precision_reduction = rpr
                        m.allow_fp16_reduced_precision_reduction = rpr
                        for op in ("addmm_", "addmm"):
                            if op == "addmm_":
                                d = c.clone()
                                d.addmm_(a, b, beta=beta, alpha=alpha)
                            else:
                                d = torch.addmm(c, a, b, beta=beta, alpha=alpha)
                            torch.cuda.synchronize()
                            dd = d.double()
                            r = {
                                "type": name, "m": M, "n": N, "k": K, "alpha": alpha, "beta": beta,
                                "backend": backend, "reduced_precision_reduction": rpr, "op": op,
                                "equal_once": float((dd == once.double()).double().mean()),
                                "equal_product": float((dd == product.double()).double().mean()),
                                "max_ulp_from_once": float(((dd - once.double()).abs() / spacing).max()),
                            }
                            rows.append(r)
                            print("%-5s %-16s %-9s %-9s %-7s %-8s %7.2f %7.2f %9.2f" % (
                                name, "%dx%dx%d" % (M, N, K), "%g,%g" % (alpha, beta), backend, rpr, op,
                                100 * r["equal_once"], 100 * r["equal_product"], r["max_ulp_from_once"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "cases": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
