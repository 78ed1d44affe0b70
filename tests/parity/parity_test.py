"""Parity with Hugging Face `transformers`, the implementation users trust.

For every family Topiary loads, builds a random checkpoint with transformers
itself (config -> model -> save_pretrained), then checks:
  * Topiary's logits (tests/tools/dump_logits) against transformers' logits,
  * `topiary eval --json` loss against transformers' loss on the same windows,
in fp32 within --rel (1e-4) relative, and in bf16 within the bound derived
from bf16 rounding itself (as tests/reference/check_logits.py derives it):
transformers' own bf16 forward is off its fp32 forward of the same weights by
E (RMS over the logits); Topiary's bf16 logits must be within 1.5 E of that
fp32 forward and within 2 E of transformers' bf16 logits, and its bf16 loss
within E of the fp32 loss.
Then prunes each fp32 model with `topiary prune` (width, and depth) and checks
that transformers loads the result (AutoModelForCausalLM.from_pretrained) and
gives the loss `topiary eval` gives.

  parity_test.py --bin BIN_DIR [--only NAME]     # every family (label parity)
  parity_test.py --bin BIN_DIR --model DIR       # one existing checkpoint (the
                                                 # bundled teacher, a job's export)
Exit 0 when every check passes, 1 naming each failure.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config  # noqa: E402

SEQ, WINDOWS = 96, 3  # eval windows of SEQ tokens (+1 target), as `topiary eval --seq-len --max-windows`

# name -> (config class, arguments). Together: Llama 2 (MHA) and 3.x (GQA,
# rope llama3), linear and dynamic rope scaling, attention and MLP biases,
# Mistral with an explicit head_dim, Qwen2 with q/k/v bias, tied embeddings.
FAMILIES = {
    "llama2_mha": (LlamaConfig, dict(hidden_size=64, intermediate_size=160, num_attention_heads=4,
                                     num_key_value_heads=4, num_hidden_layers=2, vocab_size=300,
                                     rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096)),
    "llama3_gqa_rope_llama3": (LlamaConfig, dict(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
        vocab_size=257, rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32})),
    "llama_linear_rope_bias": (LlamaConfig, dict(
        hidden_size=32, intermediate_size=80, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
        vocab_size=150, attention_bias=True, mlp_bias=True, rope_scaling={"rope_type": "linear", "factor": 2.0},
        rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=512)),
    # Dynamic NTK scaling changes the rope base once a sequence is longer than
    # max_position_embeddings: SEQ (96) is, 48 is not.
    "llama_dynamic_rope_tied": (LlamaConfig, dict(
        hidden_size=64, intermediate_size=128, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=2,
        vocab_size=260, rope_scaling={"rope_type": "dynamic", "factor": 2.0}, rope_theta=10000.0,
        max_position_embeddings=48, tie_word_embeddings=True)),
    "mistral_head_dim": (MistralConfig, dict(
        hidden_size=64, intermediate_size=112, num_attention_heads=4, num_key_value_heads=1, head_dim=24,
        num_hidden_layers=2, vocab_size=199, rms_norm_eps=1e-5, rope_theta=1000000.0,
        max_position_embeddings=512, sliding_window=None)),
    "qwen2_bias_tied": (Qwen2Config, dict(
        hidden_size=48, intermediate_size=96, num_attention_heads=6, num_key_value_heads=2, num_hidden_layers=2,
        vocab_size=211, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=512,
        tie_word_embeddings=True)),
}

failures = []


def check(ok, what, detail=""):
    print(("ok   " if ok else "FAIL ") + what + ("" if ok or not detail else f": {detail}"), flush=True)
    if not ok:
        failures.append(what)
    return ok


def randomize(model, seed):
    """Weights far from transformers' init (norm scales and biases too), so a
    misplaced scale, bias or rotation shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.08)


def build(name, dtype, out, seed=0):
    cls, kwargs = FAMILIES[name]
    cfg = cls(**kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    randomize(model, seed)
    model.to(dtype).save_pretrained(out)
    return out


def hf_model(path, dtype):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    return m.eval()


def write_tokens(path, vocab, n, seed):
    ids = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))
    with open(path, "wb") as f:
        f.write(ids.to(torch.int32).numpy().astype("<u2").tobytes())
    return ids


def windows(ids):
    starts = list(range(0, len(ids) - SEQ, SEQ))[:WINDOWS]
    return torch.stack([ids[s:s + SEQ + 1] for s in starts])


def hf_logits_loss(model, batch):
    with torch.no_grad():
        logits = model(input_ids=batch[:, :-1]).logits.float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                             batch[:, 1:].reshape(-1)).item()
    return logits, loss


def topiary_eval(args, model_dir, data, dtype):
    r = subprocess.run([os.path.join(args.bin, "topiary"), "eval", "--model", model_dir, "--data", data,
                        "--data-format", "u16", "--seq-len", str(SEQ), "--max-windows", str(WINDOWS),
                        "--dtype", dtype, "--json"], capture_output=True, text=True)
    if not check(r.returncode == 0, f"topiary eval {os.path.basename(model_dir)} --dtype {dtype}", r.stderr.strip()):
        return math.nan
    return json.loads(r.stdout)["loss"]


def topiary_logits(args, model_dir, tokens, tmp, bf16):
    src, out = os.path.join(tmp, "tokens.safetensors"), os.path.join(tmp, "logits.safetensors")
    save_file({"tokens": tokens.float()}, src)
    subprocess.run([os.path.join(args.bin, "dump_logits"), model_dir, src, out] + (["bf16"] if bf16 else []),
                   check=True)
    return load_file(out)["logits"]


def rms(x):
    return x.double().pow(2).mean().sqrt().item()


def check_fp32(args, label, model_dir, data, ids, tmp):
    """Logits and loss in fp32 against transformers in fp32."""
    batch = windows(ids)
    ref_logits, ref_loss = hf_logits_loss(hf_model(model_dir, torch.float32), batch)
    ours = topiary_logits(args, model_dir, batch[:, :-1], tmp, bf16=False)
    rel = (ours - ref_logits).abs().max().item() / ref_logits.abs().max().item()
    check(rel <= args.rel, f"{label} fp32 logits: max |diff| / max |logit| = {rel:.2e} (limit {args.rel:g})")
    loss = topiary_eval(args, model_dir, data, "fp32")
    check(abs(loss - ref_loss) <= args.rel * ref_loss,
          f"{label} fp32 loss: topiary eval {loss:.6f}, transformers {ref_loss:.6f} "
          f"(relative {abs(loss - ref_loss) / ref_loss:.2e}, limit {args.rel:g})")
    return ref_loss


def check_bf16(args, label, model_dir, data, ids, tmp):
    """bf16 logits and loss within the rounding of transformers' own bf16 forward."""
    batch = windows(ids)
    ref32, loss32 = hf_logits_loss(hf_model(model_dir, torch.float32), batch)
    ref16, loss16 = hf_logits_loss(hf_model(model_dir, torch.bfloat16), batch)
    ours = topiary_logits(args, model_dir, batch[:, :-1], tmp, bf16=True)
    e_ref, e_ours, e_pair = rms(ref16 - ref32), rms(ours - ref32), rms(ours - ref16)
    check(e_ref > 0, f"{label} bf16: transformers' bf16 forward rounds (E = {e_ref:.3e})")
    check(e_ours <= 1.5 * e_ref, f"{label} bf16 logits: RMS error vs fp32 {e_ours:.3e} = {e_ours / e_ref:.2f} E "
          f"(limit 1.5 E, E = {e_ref:.3e})")
    check(e_pair <= 2 * e_ref, f"{label} bf16 logits vs transformers bf16: RMS {e_pair:.3e} (limit 2 E)")
    loss = topiary_eval(args, model_dir, data, "bf16")
    check(abs(loss - loss32) <= e_ref, f"{label} bf16 loss: topiary eval {loss:.6f}, transformers fp32 {loss32:.6f}, "
          f"bf16 {loss16:.6f} (|diff| {abs(loss - loss32):.2e}, limit E = {e_ref:.2e})")


def check_loads(args, label, model_dir, data, ids):
    """transformers loads a checkpoint Topiary wrote and gives topiary eval's loss."""
    try:
        model = hf_model(model_dir, torch.float32)
    except Exception as e:  # noqa: BLE001 -- the failure is the finding
        check(False, f"{label}: transformers loads it ({type(e).__name__}: {e})")
        return
    _, ref_loss = hf_logits_loss(model, windows(ids))
    loss = topiary_eval(args, model_dir, data, "fp32")
    check(abs(loss - ref_loss) <= args.rel * ref_loss,
          f"{label}: transformers loads it; loss {ref_loss:.6f}, topiary eval {loss:.6f} "
          f"(relative {abs(loss - ref_loss) / ref_loss:.2e})")


def prune_targets(cfg):
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    width = {"hidden_size": cfg["hidden_size"] * 3 // 4 // 2 * 2, "intermediate_size": cfg["intermediate_size"] // 2}
    if kv > 1:
        width.update(num_attention_heads=heads // 2, num_key_value_heads=kv // 2)
    depth = {"num_hidden_layers": cfg["num_hidden_layers"] - 1}
    return {"width": width, "depth": depth}


def family(args, name):
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = build(name, torch.float32, os.path.join(tmp, name))
        cfg = json.load(open(os.path.join(fp32, "config.json")))
        data = os.path.join(tmp, "tokens.bin")
        ids = write_tokens(data, cfg["vocab_size"], SEQ * WINDOWS + 1, 1)
        check_fp32(args, name, fp32, data, ids, tmp)
        bf16 = build(name, torch.bfloat16, os.path.join(tmp, name + "-bf16"))
        check_bf16(args, name, bf16, data, ids, tmp)
        topiary = os.path.join(args.bin, "topiary")
        imp = os.path.join(tmp, "importance")
        r = subprocess.run([topiary, "importance", "--model", fp32, "--data", data, "--data-format", "u16",
                            "--seq-len", "32", "--samples", "8", "--depth", "block_influence", "--out", imp],
                           capture_output=True, text=True)
        if not check(r.returncode == 0, f"{name}: topiary importance", r.stderr.strip()):
            return
        for kind, target in prune_targets(cfg).items():
            out = os.path.join(tmp, f"{name}-{kind}")
            r = subprocess.run([topiary, "prune", "--model", fp32, "--scores", os.path.join(imp, "scores.json"),
                                "--depth-metric", "block_influence", "--target",
                                ",".join(f"{k}={v}" for k, v in target.items()), "--out", out],
                               capture_output=True, text=True)
            if check(r.returncode == 0, f"{name}: topiary prune --target {target}", r.stderr.strip()):
                check_loads(args, f"{name} pruned by {kind}", out, data, ids)


def one_model(args):
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    label = os.path.basename(os.path.normpath(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "tokens.bin")
        ids = write_tokens(data, cfg["vocab_size"], SEQ * WINDOWS + 1, 1)
        check_fp32(args, label, args.model, data, ids, tmp)
        if args.bf16:
            check_bf16(args, label, args.model, data, ids, tmp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the build's bin/ (topiary, dump_logits)")
    ap.add_argument("--only", help="one family of FAMILIES")
    ap.add_argument("--model", help="check this checkpoint instead of the random families")
    ap.add_argument("--bf16", action="store_true", help="with --model: the bf16 checks too")
    ap.add_argument("--rel", type=float, default=1e-4)
    args = ap.parse_args()
    if args.only and args.only not in FAMILIES:
        ap.error(f"--only: unknown family '{args.only}' (one of {', '.join(FAMILIES)})")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    if args.model:
        one_model(args)
    else:
        for name in FAMILIES:
            if not args.only or args.only == name:
                family(args, name)
    if failures:
        print(f"{len(failures)} parity checks failed")
        return 1
    print("all parity checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
