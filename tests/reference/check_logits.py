"""Checks Topiary's logits against the independent reference (llama_ref.py).

  check_logits.py --tool DUMP_LOGITS --model DIR          # an existing checkpoint
  check_logits.py --tool DUMP_LOGITS --config CFG.json    # a random checkpoint of that shape

Writes random token ids, runs Topiary's dump_logits tool in fp32, and compares
with the reference: max |diff| must be <= --tol (default 1e-4).

With --bf16, both run in bf16 instead (bf16 weights and activations), and the
tolerance comes from bf16 rounding itself: the reference's own bf16 forward
(plain eager PyTorch, see llama_ref.forward) is off its fp32 forward by E_ref
(root mean square over the logits); Topiary's bf16 logits must be within
--bf16-factor x E_ref of the fp32 reference, and within 2 x E_ref of the
reference's bf16 logits. Measured: Topiary's bf16 error is 0.96-0.99x the
reference's. RoPE angles computed in bf16 fail it on the bundled teacher
(1.76x); rounding differences below bf16's own noise (RMSNorm statistics in
bf16: +5-17%) pass, as they should.

With --eval-data FILE (uint16 tokens) and --eval-json FILE (the output of
`topiary eval --json --seq-len T --max-windows N`), also computes the
reference's token-weighted loss over the same windows (starts 0, T, 2T, ...;
each T+1 tokens) and requires |difference| <= --loss-tol.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--model")
    ap.add_argument("--config")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=48)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-data")
    ap.add_argument("--eval-json")
    ap.add_argument("--eval-seq-len", type=int, default=128)
    ap.add_argument("--eval-windows", type=int, default=4)
    ap.add_argument("--loss-tol", type=float, default=1e-4)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--bf16-factor", type=float, default=1.5)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if args.config:
            cfg = __import__("json").load(open(args.config))
            model_dir = os.path.join(tmp, "model")
            llama_ref.random_checkpoint(cfg, model_dir, args.seed)
        cfg, weights = llama_ref.load_model(model_dir)
        tokens = torch.randint(0, cfg["vocab_size"], (args.batch, args.seq_len))
        llama_ref.write_safetensors(os.path.join(tmp, "tokens.safetensors"), {"tokens": tokens.float()})
        out = os.path.join(tmp, "logits.safetensors")
        subprocess.run([args.tool, model_dir, os.path.join(tmp, "tokens.safetensors"), out] +
                       (["bf16"] if args.bf16 else []), check=True)
        ours = llama_ref.read_safetensors(out)["logits"]
        with torch.no_grad():
            ref = llama_ref.forward(cfg, weights, tokens)
        if args.bf16:
            return check_bf16(args, cfg, weights, tokens, ours, ref)
        diff = (ours - ref).abs().max().item()
        scale = ref.abs().max().item()
        name = os.path.basename(args.config or args.model)
        print(f"{name}: max |logit diff| = {diff:.3e} (logits up to {scale:.2f}, tolerance {args.tol:g})")
        if not diff <= args.tol:
            print("FAIL: Topiary's logits disagree with the reference")
            return 1
        if args.eval_data:
            return check_loss(args, cfg, weights)
    return 0


def check_bf16(args, cfg, weights, tokens, ours, ref32):
    with torch.no_grad():
        ref16 = llama_ref.forward(cfg, weights, tokens, torch.bfloat16).float()

    def rms(x):
        return x.double().pow(2).mean().sqrt().item()

    e_ref, e_ours, e_pair = rms(ref16 - ref32), rms(ours - ref32), rms(ours - ref16)
    name = os.path.basename(args.config or args.model)
    print(f"{name} bf16: RMS logit error vs fp32: reference bf16 {e_ref:.3e}, Topiary bf16 {e_ours:.3e} "
          f"({e_ours / e_ref:.2f}x; limit {args.bf16_factor:g}x); Topiary vs reference bf16 {e_pair:.3e} "
          f"(limit {2 * e_ref:.3e}); logits RMS {rms(ref32):.3f}")
    if not e_ref > 0:
        print("FAIL: the reference's bf16 forward did not round (E_ref is 0)")
        return 1
    if not e_ours <= args.bf16_factor * e_ref:
        print("FAIL: Topiary's bf16 logits lose more to rounding than a plain bf16 forward")
        return 1
    if not e_pair <= 2 * e_ref:
        print("FAIL: Topiary's bf16 logits and the reference's bf16 logits disagree beyond bf16 rounding")
        return 1
    return 0


def check_loss(args, cfg, weights):
    import json
    data = open(args.eval_data, "rb").read()
    ids = torch.frombuffer(bytearray(data), dtype=torch.int16).to(torch.int64) & 0xFFFF
    T = args.eval_seq_len
    starts = [s for s in range(0, len(ids) - T, T)][: args.eval_windows]
    batch = torch.stack([ids[s:s + T + 1] for s in starts])
    with torch.no_grad():
        logits = llama_ref.forward(cfg, weights, batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                                 batch[:, 1:].reshape(-1)).item()
    ours = json.load(open(args.eval_json))["loss"]
    print(f"loss: topiary eval {ours:.6f}, reference {loss:.6f} over {len(starts)} windows of {T}")
    if not abs(ours - loss) <= args.loss_tol:
        print("FAIL: topiary eval's loss disagrees with the reference")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
