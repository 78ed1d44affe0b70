#!/usr/bin/env bash
# The recovery experiment: on the bundled teacher (models/kjv-llama-8m), prune
# to half of the non-embedding parameters by width and, separately, by depth;
# recover each with the same token budget by (a) nothing, (b) cross-entropy
# fine-tuning, (c) logit distillation from the teacher, (d) LoRA and (e)
# partial-layer tuning; for depth also (f) LLM-Streamline's replacement
# block. Every model is scored on the held-out books: perplexity, KL to the
# teacher and top-1 agreement, and zero-shot verse completion (acc_norm).
#
#   bench/recovery/run.sh [OUT_DIR]      (default build/recovery)
#   env: TOKENS (training tokens per recovery, default 600K), SEED (default 0)
#
# Shapes (non-embedding parameters 6.30M -> 3.15M, embedding and lm_head kept):
#   width: intermediate 768 -> 384, heads 8 -> 4, KV groups 4 -> 2 (hidden 256 kept)
#   depth: 8 -> 4 blocks, the 4 whose removal costs least LM loss one at a time
# Writes OUT_DIR/results.md (the table), OUT_DIR/results.json and
# OUT_DIR/meta.json (date, commit, machine), and prints one SUMMARY line.
# The README's table is generated from committed copies of these files
# (results/recovery/, scripts/results_tables). About 15 minutes on 2 cores at the default budget.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-build/recovery}
tokens=${TOKENS:-600K}
seed=${SEED:-0}
topiary=build/bin/topiary
teacher=models/kjv-llama-8m
kjv=build/kjv
[ -x "$topiary" ] || scripts/build
[ -s "$kjv/kjv-train.bin" ] || scripts/kjv_tokens "$kjv"
mkdir -p "$out"
scripts/run_meta "$out/meta.json" tokens="$tokens" seed="$seed"

recipe=(--data "$kjv/kjv-train.bin" --eval-data "$kjv/kjv-val.bin" --seq-len 256 --tokens "$tokens"
        --global-batch 16 --micro-batch 8 --warmup 10 --log-every 25 --eval-windows 16 --seed "$seed")
lr=(--lr 2e-3 --min-lr 2e-4)

evaluate() {  # evaluate NAME MODEL
  "$topiary" eval --model "$2" --teacher "$teacher" --data "$kjv/kjv-val.bin" --seq-len 256 --max-windows 64 \
    --tasks "$kjv/kjv-tasks.jsonl" --max-examples 200 --json >"$out/$1.eval.json"
}
timed() {  # timed NAME command...: runs it, logs to OUT/NAME.log, records seconds
  local name=$1; shift
  local t0=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  echo $((SECONDS - t0)) >"$out/$name.seconds"
}

echo "== importance (64 calibration sequences)"
"$topiary" importance --model "$teacher" --data "$kjv/kjv-train.bin" --seq-len 256 --samples 64 \
  --depth lm_loss,block_influence --out "$out/importance" >/dev/null
"$topiary" prune --model "$teacher" --scores "$out/importance/scores.json" \
  --target intermediate_size=384,num_attention_heads=4,num_key_value_heads=2 --out "$out/width" >/dev/null
"$topiary" prune --model "$teacher" --scores "$out/importance/scores.json" \
  --target num_hidden_layers=4 --depth-metric lm_loss --out "$out/depth" >/dev/null
evaluate teacher "$teacher"

for shape in width depth; do
  student=$out/$shape
  echo "== $shape: none, CE, KD, LoRA, partial"
  evaluate "$shape-none" "$student"
  timed "$shape-ce" "$topiary" train --model "$student" "${recipe[@]}" "${lr[@]}" --out "$out/$shape-ce"
  timed "$shape-kd" "$topiary" distill --teacher "$teacher" --student "$student" "${recipe[@]}" "${lr[@]}" \
    --out "$out/$shape-kd"
  timed "$shape-lora" "$topiary" train --model "$student" "${recipe[@]}" --lr 4e-3 --min-lr 4e-4 \
    --lora-rank 16 --lora-alpha 32 --weight-decay 0 --out "$out/$shape-lora"
  timed "$shape-partial" "$topiary" train --model "$student" "${recipe[@]}" "${lr[@]}" --train-last-blocks 2 \
    --out "$out/$shape-partial"
  for r in ce kd lora partial; do evaluate "$shape-$r" "$out/$shape-$r"; done
done
echo "== depth: LLM-Streamline (5 blocks -> 1 trained block, 4 layers)"
timed depth-streamline "$topiary" streamline --model "$teacher" --drop 5 "${recipe[@]}" "${lr[@]}" \
  --out "$out/depth-streamline"
evaluate depth-streamline "$out/depth-streamline"

for m in width depth; do "$topiary" inspect --model "$out/$m" --json >"$out/$m.inspect.json"; done
"$topiary" inspect --model "$teacher" --json >"$out/teacher.inspect.json"
/usr/bin/python3 - "$out" "$tokens" <<'EOF'
import json, os, sys
out, tokens = sys.argv[1], sys.argv[2]
def load(name):
    return json.load(open(os.path.join(out, name)))
params = {m: load(f"{m}.inspect.json")["params"]["non_embedding"] for m in ("teacher", "width", "depth")}
rows = [("teacher", "—", "teacher")]
labels = {"none": "(a) none", "ce": "(b) CE fine-tuning", "kd": "(c) logit KD", "lora": "(d) LoRA r=16 (CE)",
          "partial": "(e) last 2 blocks + head (CE)", "streamline": "(f) LLM-Streamline block (MSE)"}
for shape in ("width", "depth"):
    for r in ("none", "ce", "kd", "lora", "partial") + (("streamline",) if shape == "depth" else ()):
        rows.append((shape, labels[r], f"{shape}-{r}"))
table, results = [], {}
for shape, label, name in rows:
    e = load(f"{name}.eval.json")
    secs = open(os.path.join(out, f"{name}.seconds")).read().strip() if os.path.exists(os.path.join(out, f"{name}.seconds")) else ""
    p = params["teacher" if shape == "teacher" else shape]
    results[name] = {"perplexity": e["perplexity"], "kl": e.get("kl_to_teacher", 0.0),
                     "agreement": e.get("top1_agreement", 1.0), "acc_norm": e["tasks"]["acc_norm"],
                     "non_embedding_params": p, "train_seconds": int(secs) if secs else 0}
    r = results[name]
    table.append(f"| {shape} | {label} | {p / 1e6:.2f}M | {r['perplexity']:.1f} | {r['kl']:.3f} | "
                 f"{100 * r['agreement']:.1f}% | {r['acc_norm']:.3f} | {secs or '—'} |")
head = ("| shape | recovery | non-emb. params | held-out ppl | KL to teacher | top-1 agreement | verse acc_norm | train s |\n"
        "|---|---|---|---|---|---|---|---|")
md = f"Training budget per recovery: {tokens} tokens (seq 256, batch 16).\n\n" + head + "\n" + "\n".join(table) + "\n"
open(os.path.join(out, "results.md"), "w").write(md)
json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=2)
print(md)
ppl = lambda n: results[n]["perplexity"]
print("SUMMARY recovery tokens=%s width_kd_ppl=%.1f width_ce_ppl=%.1f depth_kd_ppl=%.1f depth_ce_ppl=%.1f "
      "kd_beats_ce=%s width_beats_depth=%s" % (
          tokens, ppl("width-kd"), ppl("width-ce"), ppl("depth-kd"), ppl("depth-ce"),
          ppl("width-kd") < ppl("width-ce") and ppl("depth-kd") < ppl("depth-ce"),
          ppl("width-kd") < ppl("depth-kd")))
EOF
