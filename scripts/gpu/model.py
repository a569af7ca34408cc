"""A small Llama-style model in plain PyTorch, for the GPU check.

Random bf16 weights named as a Hugging Face Llama checkpoint, saved to safetensors;
RMSNorm, rotary embeddings, grouped-query attention through scaled_dot_product_attention
(flash or memory-efficient kernels only, so that every cuBLAS GEMM of the model is a
matrix product with a weight: the verifier's --require-weights applies), SwiGLU MLP, a
static KV cache, and a decode step whose inputs and outputs live in fixed device
buffers, so that the same step runs eagerly or captured in a CUDA graph.

PyTorch is imported inside functions: the module imports without it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import safetensors_io  # noqa: E402

CONFIG = {
    "vocab": 16384,
    "hidden": 1024,
    "layers": 4,
    "heads": 8,
    "kv_heads": 2,
    "head_dim": 128,
    "intermediate": 2816,
    "rope_theta": 10000.0,
    "eps": 1e-5,
}
SEED = 20251103
GEMMS_PER_TOKEN_STEP = 7 * CONFIG["layers"] + 1  # q, k, v, o, gate, up, down; lm_head


def tensor_shapes(cfg=CONFIG):
    """(name, shape) of every weight, in file order."""
    d, f, hd = cfg["hidden"], cfg["intermediate"], cfg["head_dim"]
    out = [("model.embed_tokens.weight", (cfg["vocab"], d))]
    for i in range(cfg["layers"]):
        p = "model.layers.%d." % i
        out += [
            (p + "input_layernorm.weight", (d,)),
            (p + "self_attn.q_proj.weight", (cfg["heads"] * hd, d)),
            (p + "self_attn.k_proj.weight", (cfg["kv_heads"] * hd, d)),
            (p + "self_attn.v_proj.weight", (cfg["kv_heads"] * hd, d)),
            (p + "self_attn.o_proj.weight", (d, cfg["heads"] * hd)),
            (p + "post_attention_layernorm.weight", (d,)),
            (p + "mlp.gate_proj.weight", (f, d)),
            (p + "mlp.up_proj.weight", (f, d)),
            (p + "mlp.down_proj.weight", (d, f)),
        ]
    out += [("model.norm.weight", (d,)), ("lm_head.weight", (cfg["vocab"], d))]
    return out


def make_weights(cfg=CONFIG, seed=SEED, device="cuda"):
    """Random bf16 weights (normal, std 0.02; norms 1), the same for the same seed."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    w = {}
    for name, shape in tensor_shapes(cfg):
        if name.endswith("norm.weight"):
            w[name] = torch.ones(shape, device=device, dtype=torch.bfloat16)
        else:
            t = torch.randn(shape, generator=g, device=device, dtype=torch.float32) * 0.02
            w[name] = t.to(torch.bfloat16)
    return w


def save_weights(path, weights):
    """Writes the weights as safetensors; returns which writer was used."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        save_file = None
    cpu = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    if save_file is not None:
        save_file(cpu, path, metadata={"format": "pt"})
        return "safetensors %s" % _version("safetensors")
    import torch

    names = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
    items = [(k, names[v.dtype], tuple(v.shape), v.view(torch.uint8).numpy().tobytes())
             for k, v in cpu.items()]
    safetensors_io.write(path, items, {"format": "pt"})
    return "hand-written (safetensors not installed)"


def load_weights(path, device="cuda"):
    """Reads a safetensors file (by hand: no dependency) onto the device."""
    import torch

    dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    header, _, data_start = safetensors_io.read_header(path)
    with open(path, "rb") as f:
        f.seek(data_start)
        data = bytearray(f.read())
    raw = torch.frombuffer(data, dtype=torch.uint8)
    w = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        t = raw[b:e].view(dtypes[h["dtype"]]).reshape(h["shape"])
        w[name] = t.to(device)
    return w


def _version(pkg):
    try:
        from importlib import metadata

        return metadata.version(pkg)
    except Exception:
        return "?"


def attention_backends():
    """A context that allows only the flash and memory-efficient attention kernels
    (neither calls cuBLAS); PyTorch raises if neither applies."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])


class Model:
    """The model with a static KV cache for `batch` sequences of up to `max_len`."""

    def __init__(self, weights, batch, max_len, cfg=CONFIG, device="cuda"):
        import torch

        self.torch = torch
        self.F = torch.nn.functional
        self.w = weights
        self.cfg = cfg
        self.B = batch
        self.L = max_len
        hd, kvh = cfg["head_dim"], cfg["kv_heads"]
        inv = 1.0 / cfg["rope_theta"] ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd)
        t = torch.arange(max_len, device=device, dtype=torch.float32)
        freqs = t[:, None] * inv[None, :]  # element-wise: no GEMM
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos, self.sin = emb.cos(), emb.sin()
        shape = (batch, kvh, max_len, hd)
        self.kc = [torch.zeros(shape, device=device, dtype=torch.bfloat16) for _ in range(cfg["layers"])]
        self.vc = [torch.zeros(shape, device=device, dtype=torch.bfloat16) for _ in range(cfg["layers"])]
        self.tok = torch.zeros(batch, device=device, dtype=torch.long)
        self.pos = torch.zeros(1, device=device, dtype=torch.long)
        self.logits = torch.zeros(batch, cfg["vocab"], device=device, dtype=torch.bfloat16)
        self.positions = torch.arange(max_len, device=device)
        self.gemm_calls = 0  # F.linear calls issued (each one cuBLAS GEMM)
        self.fault_row_after_layer = None  # decode_step alters a hidden-state row there

    # -- pieces ---------------------------------------------------------------------

    def linear(self, x, name):
        self.gemm_calls += 1
        return self.F.linear(x, self.w[name])

    def rms(self, x, name):
        x32 = x.float()
        y = x32 * self.torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.cfg["eps"])
        return y.to(x.dtype) * self.w[name]

    def rope(self, x, cos, sin):
        half = x.shape[-1] // 2
        x32 = x.float()
        rotated = self.torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
        return (x32 * cos + rotated * sin).to(x.dtype)

    def expand_kv(self, k):
        b, kvh, t, hd = k.shape
        g = self.cfg["heads"] // kvh
        return k[:, :, None].expand(b, kvh, g, t, hd).reshape(b, kvh * g, t, hd)

    def layer(self, i, h, prefill):
        cfg, F = self.cfg, self.F
        p = "model.layers.%d." % i
        b, t, _ = h.shape
        hd, nh, kvh = cfg["head_dim"], cfg["heads"], cfg["kv_heads"]
        a = self.rms(h, p + "input_layernorm.weight")
        q = self.linear(a, p + "self_attn.q_proj.weight").view(b, t, nh, hd).transpose(1, 2)
        k = self.linear(a, p + "self_attn.k_proj.weight").view(b, t, kvh, hd).transpose(1, 2)
        v = self.linear(a, p + "self_attn.v_proj.weight").view(b, t, kvh, hd).transpose(1, 2)
        if prefill:
            cos, sin = self.cos[:t], self.sin[:t]
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
            self.kc[i][:, :, :t] = k
            self.vc[i][:, :, :t] = v
            o = F.scaled_dot_product_attention(q, self.expand_kv(k), self.expand_kv(v), is_causal=True)
        else:
            cos, sin = self.cos.index_select(0, self.pos), self.sin.index_select(0, self.pos)
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
            self.kc[i].index_copy_(2, self.pos, k)
            self.vc[i].index_copy_(2, self.pos, v)
            mask = (self.positions <= self.pos).view(1, 1, 1, self.L)
            o = F.scaled_dot_product_attention(
                q, self.expand_kv(self.kc[i]), self.expand_kv(self.vc[i]), attn_mask=mask)
        o = o.transpose(1, 2).reshape(b, t, nh * hd)
        h = h + self.linear(o, p + "self_attn.o_proj.weight")
        m = self.rms(h, p + "post_attention_layernorm.weight")
        gate = self.linear(m, p + "mlp.gate_proj.weight")
        up = self.linear(m, p + "mlp.up_proj.weight")
        return h + self.linear(F.silu(gate) * up, p + "mlp.down_proj.weight")

    def head(self, h):
        last = self.rms(h[:, -1, :], "model.norm.weight")
        return self.linear(last, "lm_head.weight")

    # -- prefill and decode ----------------------------------------------------------

    def prefill(self, tokens):
        """Fills the cache with tokens [B, T]; the next token goes to self.tok."""
        h = self.F.embedding(tokens, self.w["model.embed_tokens.weight"])
        for i in range(self.cfg["layers"]):
            h = self.layer(i, h, prefill=True)
        logits = self.head(h)
        self.logits.copy_(logits)
        self.tok.copy_(logits.argmax(-1))
        self.pos.fill_(tokens.shape[1])

    def decode_step(self):
        """One token for every sequence, from and into the fixed buffers (tok, pos,
        logits, cache): the same code runs eagerly and in a CUDA graph."""
        h = self.F.embedding(self.tok, self.w["model.embed_tokens.weight"])[:, None, :]
        for i in range(self.cfg["layers"]):
            h = self.layer(i, h, prefill=False)
            if self.fault_row_after_layer == i:
                # The fault under test: one row of the hidden state altered by an
                # element-wise op between two layers (no GEMM involved).
                h[0, 0, :].add_(0.5)
        logits = self.head(h)
        self.logits.copy_(logits)
        self.tok.copy_(logits.argmax(-1))
        self.pos.add_(1)

    def snapshot(self):
        c = lambda ts: [t.clone() for t in ts]  # noqa: E731
        return (c(self.kc), c(self.vc), self.tok.clone(), self.pos.clone(), self.logits.clone())

    def restore(self, snap):
        kc, vc, tok, pos, logits = snap
        for dst, src in zip(self.kc + self.vc, kc + vc):
            dst.copy_(src)
        self.tok.copy_(tok)
        self.pos.copy_(pos)
        self.logits.copy_(logits)


def prompt(batch, length, seed=SEED + 1, device="cuda"):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, CONFIG["vocab"], (batch, length), generator=g, device=device)


def tensor_sha256(t):
    """SHA-256 of a tensor's bytes (on the host)."""
    import hashlib

    import torch

    return hashlib.sha256(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()).hexdigest()
