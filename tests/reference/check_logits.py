"""Checks Topiary's logits against the independent reference (llama_ref.py).

  check_logits.py --tool DUMP_LOGITS --model DIR          # an existing checkpoint
  check_logits.py --tool DUMP_LOGITS --config CFG.json    # a random checkpoint of that shape

Writes random token ids, runs Topiary's dump_logits tool in fp32, and compares
with the reference: max |diff| must be <= --tol (default 1e-4).
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
        subprocess.run([args.tool, model_dir, os.path.join(tmp, "tokens.safetensors"), out], check=True)
        ours = llama_ref.read_safetensors(out)["logits"]
        with torch.no_grad():
            ref = llama_ref.forward(cfg, weights, tokens)
        diff = (ours - ref).abs().max().item()
        scale = ref.abs().max().item()
        name = os.path.basename(args.config or args.model)
        print(f"{name}: max |logit diff| = {diff:.3e} (logits up to {scale:.2f}, tolerance {args.tol:g})")
        if not diff <= args.tol:
            print("FAIL: Topiary's logits disagree with the reference")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
