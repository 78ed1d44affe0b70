"""An independent reference for Topiary's Llama-family forward pass.

It follows the Hugging Face Llama equations (modeling_llama.py) directly in
PyTorch, shares no code with the C++ implementation, and reads and writes
safetensors with its own parser. Run with the Python of Topiary's
environment (scripts/venv), whose torch it uses for tensor arithmetic only.
"""
import json
import math
import os
import struct

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
NAMES = {v: k for k, v in DTYPES.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        raw = bytearray(data[base + b:base + e])
        t = torch.frombuffer(raw, dtype=dtype) if e > b else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def load_model(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    index = os.path.join(model_dir, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index):
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            weights.update(read_safetensors(os.path.join(model_dir, shard)))
    else:
        weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return cfg, {k: v.float() for k, v in weights.items()}


def inv_freq(cfg):
    heads = cfg["num_attention_heads"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return inv / rs["factor"]
    if kind == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(kind)


def rms_norm(x, w, eps):
    # In fp32 whatever the activations' dtype, rounded back before the weight
    # (as Hugging Face's LlamaRMSNorm does).
    xf = x.float()
    var = xf.pow(2).mean(-1, keepdim=True)
    return w * (xf * torch.rsqrt(var + eps)).to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, w, tokens, dtype=torch.float32):
    """tokens: LongTensor (B, T) -> logits (B, T, V) in `dtype`.

    With dtype=torch.bfloat16 this is the plain bf16 forward of eager
    PyTorch/Hugging Face: bf16 weights and activations, RMSNorm statistics and
    the attention softmax in fp32, each rounded back to bf16 as it leaves.
    Its distance from the fp32 forward is what bf16 rounding costs an
    implementation that does nothing clever."""
    w = {k: v.to(dtype) for k, v in w.items()}
    B, T = tokens.shape
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
    eps = cfg.get("rms_norm_eps", 1e-6)
    topiary = cfg.get("topiary", {})
    has_attn = topiary.get("has_attention", [True] * cfg["num_hidden_layers"])
    has_mlp = topiary.get("has_mlp", [True] * cfg["num_hidden_layers"])
    freqs = torch.outer(torch.arange(T, dtype=torch.int64).float(), inv_freq(cfg))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    mask = torch.full((T, T), float("-inf")).triu(1)

    def lin(x, name):
        b = w.get(name + ".bias")
        return torch.nn.functional.linear(x, w[name + ".weight"], b)

    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if has_attn[i]:
            h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
            q = lin(h, p + "self_attn.q_proj").view(B, T, nh, hd).transpose(1, 2)
            k = lin(h, p + "self_attn.k_proj").view(B, T, nkv, hd).transpose(1, 2)
            v = lin(h, p + "self_attn.v_proj").view(B, T, nkv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
            att = (q @ k.transpose(2, 3)) / math.sqrt(hd) + mask.to(dtype)
            att = torch.softmax(att.float(), dim=-1).to(dtype)
            o = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
            x = x + lin(o, p + "self_attn.o_proj")
        if has_mlp[i]:
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
            x = x + lin(torch.nn.functional.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"),
                        p + "mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def random_checkpoint(cfg, out_dir, seed, dtype=torch.float32):
    """Writes a checkpoint with every weight random (biases and norms too)."""
    g = torch.Generator().manual_seed(seed)
    C, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or C // nh
    ff = cfg["intermediate_size"]
    qkv_bias = cfg.get("model_type") == "qwen2" or cfg.get("attention_bias", False)
    o_bias = cfg.get("model_type") == "llama" and cfg.get("attention_bias", False)

    def rnd(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    t = {"model.embed_tokens.weight": rnd(V, C, scale=1.0)}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + rnd(C, scale=0.1)
        t[p + "self_attn.q_proj.weight"] = rnd(nh * hd, C, scale=C ** -0.5)
        t[p + "self_attn.k_proj.weight"] = rnd(nkv * hd, C, scale=C ** -0.5)
        t[p + "self_attn.v_proj.weight"] = rnd(nkv * hd, C, scale=C ** -0.5)
        t[p + "self_attn.o_proj.weight"] = rnd(C, nh * hd, scale=(nh * hd) ** -0.5)
        if qkv_bias:
            for n, d in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                t[p + f"self_attn.{n}_proj.bias"] = rnd(d, scale=0.1)
        if o_bias:
            t[p + "self_attn.o_proj.bias"] = rnd(C, scale=0.1)
        t[p + "post_attention_layernorm.weight"] = 1 + rnd(C, scale=0.1)
        t[p + "mlp.gate_proj.weight"] = rnd(ff, C, scale=C ** -0.5)
        t[p + "mlp.up_proj.weight"] = rnd(ff, C, scale=C ** -0.5)
        t[p + "mlp.down_proj.weight"] = rnd(C, ff, scale=ff ** -0.5)
    t["model.norm.weight"] = 1 + rnd(C, scale=0.1)
    if not cfg.get("tie_word_embeddings"):
        t["lm_head.weight"] = rnd(V, C, scale=C ** -0.5)
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), {k: v.to(dtype) for k, v in t.items()})
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"), indent=2)
