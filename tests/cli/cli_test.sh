#!/usr/bin/env bash
# End-to-end checks of the `topiary` local commands on the bundled teacher:
# exit codes, one readable error line, --json output, and an importance ->
# prune -> eval round on real data. Usage: cli_test.sh BIN_DIR KJV_DIR
set -uo pipefail
bin=$1; kjv=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${TOPIARY_PYTHON:-$("$root/scripts/venv")/bin/python}  # the reference check needs torch
teacher=$root/models/kjv-llama-8m
topiary=$bin/topiary
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); else echo "FAIL: $name"; fail=$((fail + 1)); fi
}
# expect_error NAME CODE PHRASE -- command...: exit code CODE, exactly one stderr line containing PHRASE
expect_error() {
  local name=$1 code=$2 phrase=$3; shift 4
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  check "$name: exit $code (got $rc)" test "$rc" -eq "$code"
  check "$name: one line on stderr" test "$(wc -l <"$tmp/err")" -eq 1
  check "$name: names '$phrase'" grep -q -- "$phrase" "$tmp/err"
}

"$topiary" inspect --model "$teacher" --json >"$tmp/inspect.json"
check "inspect" grep -q '"total": 8392960' "$tmp/inspect.json"

"$topiary" eval --model "$teacher" --data "$kjv/kjv-val.bin" --seq-len 128 --max-windows 4 --json >"$tmp/eval.json"
check "eval --json" /usr/bin/python3 -c "
import json, math, sys
j = json.load(open('$tmp/eval.json'))
assert j['tokens'] == 4 * 128 and 1 < j['perplexity'] < 200 and abs(math.exp(j['loss']) - j['perplexity']) < 1e-6, j"

a=$("$topiary" generate --model "$teacher" --prompt "In the beginning" --greedy --max-new-tokens 12)
b=$("$topiary" generate --model "$teacher" --prompt "In the beginning" --greedy --max-new-tokens 12)
check "generate greedy is deterministic" test "$a" = "$b"
check "generate continues the prompt" test "${#a}" -gt 30

expect_error "eval missing model" 2 "config.json" -- "$topiary" eval --model "$tmp/none" --data "$kjv/kjv-val.bin"
expect_error "eval bad dtype" 2 "--dtype" -- "$topiary" eval --model "$teacher" --data "$kjv/kjv-val.bin" --dtype int8
printf 'abc' >"$tmp/odd.bin"
expect_error "eval truncated data" 2 "truncated" -- "$topiary" eval --model "$teacher" --data "$tmp/odd.bin" --data-format u16
expect_error "prune bad target" 2 "target.hidden_size" -- "$topiary" prune --model "$teacher" --target hidden_size=999 --out "$tmp/p"
expect_error "prune unknown key" 2 "unknown key" -- "$topiary" prune --model "$teacher" --target depth=3 --out "$tmp/p"
expect_error "usage" 2 "" -- "$topiary" eval --model

"$topiary" importance --model "$teacher" --data "$kjv/kjv-train.bin" --seq-len 128 --samples 16 --depth lm_loss \
  --out "$tmp/imp" >/dev/null
check "importance writes scores.json" test -s "$tmp/imp/scores.json"
check "importance writes plots" grep -q "<svg" "$tmp/imp/depth.svg"
"$topiary" prune --model "$teacher" --scores "$tmp/imp/scores.json" \
  --target hidden_size=192,intermediate_size=512,num_attention_heads=6,num_key_value_heads=3,num_hidden_layers=7 \
  --depth-metric block_influence --out "$tmp/pruned" >/dev/null
"$topiary" inspect --model "$tmp/pruned" --json >"$tmp/pruned.json"
check "pruned shape" /usr/bin/python3 -c "
import json
j = json.load(open('$tmp/pruned.json'))
assert (j['hidden_size'], j['intermediate_size'], j['num_attention_heads'], j['num_key_value_heads'],
        j['num_hidden_layers'], j['head_dim'], j['isomorphic']) == (192, 512, 6, 3, 7, 32, True), j"
check "pruned keeps the tokenizer" cmp -s "$teacher/tokenizer.model" "$tmp/pruned/tokenizer.model"
"$topiary" eval --model "$tmp/pruned" --data "$kjv/kjv-val.bin" --seq-len 128 --max-windows 4 --json >"$tmp/pe.json"
check "pruned model evaluates" grep -q perplexity "$tmp/pe.json"
check "reference loads the pruned model: same logits and loss" "$python" "$root/tests/reference/check_logits.py" \
  --tool "$bin/dump_logits" --model "$tmp/pruned" --eval-data "$kjv/kjv-val.bin" --eval-json "$tmp/pe.json" \
  --eval-seq-len 128 --eval-windows 4
"$topiary" prune --model "$teacher" --scores "$tmp/imp/scores.json" --redistribute-heads \
  --target num_attention_heads=4,num_key_value_heads=4 --out "$tmp/redis" >/dev/null
check "head redistribution prunes" test -s "$tmp/redis/model.safetensors"
expect_error "redistribution needs a head target" 2 "redistribute_heads" -- "$topiary" prune --model "$teacher" \
  --scores "$tmp/imp/scores.json" --redistribute-heads --target hidden_size=128 --out "$tmp/p"

"$topiary" search --model "$teacher" --scores "$tmp/imp/scores.json" --data "$kjv/kjv-val.bin" --params 0.6 \
  --seq-len 64 --max-windows 2 --max-candidates 4 --out "$tmp/search" >"$tmp/search.out" 2>/dev/null
check "search ranks candidates by loss" /usr/bin/python3 -c "
import json
j = json.load(open('$tmp/search/search.json'))
c = j['candidates']
assert 1 <= len(c) <= 4 and [x['loss'] for x in c] == sorted(x['loss'] for x in c), c
assert all(abs(x['params'] - j['space']['budget']) <= 0.05 * j['space']['budget'] for x in c), c"
check "search prints the table" grep -q "rank  hidden" "$tmp/search.out"
expect_error "search impossible budget" 2 "search.params" -- "$topiary" search --model "$teacher" \
  --scores "$tmp/imp/scores.json" --data "$kjv/kjv-val.bin" --params 100
expect_error "search bad budget" 2 "--params" -- "$topiary" search --model "$teacher" \
  --scores "$tmp/imp/scores.json" --data "$kjv/kjv-val.bin" --params lots

"$topiary" eval --model "$tmp/pruned" --teacher "$teacher" --data "$kjv/kjv-val.bin" --seq-len 64 --max-windows 4 \
  --tasks "$kjv/kjv-tasks.jsonl" --max-examples 100 --json >"$tmp/agree.json"
check "eval --teacher --tasks" /usr/bin/python3 -c "
import json
j = json.load(open('$tmp/agree.json'))
assert j['kl_to_teacher'] > 0 and 0 < j['top1_agreement'] < 1 and j['tasks']['examples'] == 100, j"
"$topiary" eval --model "$teacher" --tasks "$kjv/kjv-tasks.jsonl" --max-examples 100 --seq-len 128 --json >"$tmp/mc.json"
check "the teacher beats chance (0.25) on held-out verse completion" /usr/bin/python3 -c "
import json
j = json.load(open('$tmp/mc.json'))
assert j['tasks']['acc_norm'] > 0.3, j"
printf '{"context": "a", "choices": ["x"], "label": 0}\n' >"$tmp/bad_tasks.jsonl"
expect_error "eval bad tasks" 2 "line 1" -- "$topiary" eval --model "$teacher" --tasks "$tmp/bad_tasks.jsonl"
"$topiary" distill --teacher "$teacher" --student "$tmp/pruned" --data "$kjv/kjv-train.bin" --eval-data "$kjv/kjv-val.bin" \
  --seq-len 64 --steps 3 --global-batch 4 --micro-batch 2 --warmup 1 --eval-windows 2 --out "$tmp/kd" >/dev/null
check "distill writes a checkpoint and a log" test -s "$tmp/kd/model.safetensors" -a -s "$tmp/kd/train_log.jsonl"
check "distill logs the KL" grep -q '"kl"' "$tmp/kd/train_log.jsonl"
expect_error "distill bad temperature" 2 "--temperature" -- "$topiary" distill --teacher "$teacher" \
  --student "$tmp/pruned" --data "$kjv/kjv-train.bin" --temperature 0 --out "$tmp/kd2"
expect_error "distill batch vs ranks" 2 "global_batch" -- "$topiary" distill --teacher "$teacher" \
  --student "$tmp/pruned" --data "$kjv/kjv-train.bin" --global-batch 6 --micro-batch 4 --out "$tmp/kd2"

# LoRA with a hidden-state term through a learned map (student width 192, teacher 256); the export is merged.
"$topiary" distill --teacher "$teacher" --student "$tmp/pruned" --data "$kjv/kjv-train.bin" --eval-data "$kjv/kjv-val.bin" \
  --seq-len 64 --steps 3 --global-batch 4 --micro-batch 2 --warmup 1 --eval-windows 2 --lr 1e-2 \
  --lora-rank 4 --hidden-pairs 6:7 --json --out "$tmp/kdl" >"$tmp/kdl.out"
"$topiary" inspect --model "$tmp/kdl" --json >"$tmp/kdl.json"
check "LoRA export is a plain checkpoint of the student's shape" /usr/bin/python3 -c "
import json
a, b = json.load(open('$tmp/kdl.json')), json.load(open('$tmp/pruned.json'))
assert a['params']['total'] == b['params']['total'] and a['num_hidden_layers'] == 7, (a, b)"
check "LoRA changed the weights" bash -c "! cmp -s '$tmp/kdl/model.safetensors' '$tmp/pruned/model.safetensors'"
check "distill logs the hidden term and MFU" /usr/bin/python3 -c "
import json
rows = [json.loads(l) for l in open('$tmp/kdl/train_log.jsonl')]
assert all(r['hidden'] >= 0 and 0 < r['mfu'] < 2 for r in rows), rows"
"$topiary" eval --model "$tmp/kdl" --data "$kjv/kjv-val.bin" --seq-len 64 --max-windows 2 --json >"$tmp/kdl-eval.json"
check "the merged export scores what the adapted model scored in training" /usr/bin/python3 -c "
import json
last = [json.loads(l) for l in open('$tmp/kdl/train_log.jsonl')][-1]
e = json.load(open('$tmp/kdl-eval.json'))
assert abs(last['eval_loss'] - e['loss']) < 2e-3, (last, e)"
expect_error "distill bad LoRA rank" 2 "--lora-rank" -- "$topiary" distill --teacher "$teacher" \
  --student "$tmp/pruned" --data "$kjv/kjv-train.bin" --lora-rank -1 --out "$tmp/kd2"
expect_error "distill bad LoRA target" 2 "lora targets" -- "$topiary" distill --teacher "$teacher" \
  --student "$tmp/pruned" --data "$kjv/kjv-train.bin" --lora-rank 4 --lora-targets q,zz --out "$tmp/kd2"
expect_error "distill hidden pair outside the student" 2 "student block 9" -- "$topiary" distill --teacher "$teacher" \
  --student "$tmp/pruned" --data "$kjv/kjv-train.bin" --hidden-pairs 9:0 --out "$tmp/kd2"
expect_error "distill bad hidden loss" 2 "--hidden-loss" -- "$topiary" distill --teacher "$teacher" \
  --student "$tmp/pruned" --data "$kjv/kjv-train.bin" --hidden-pairs 1:1 --hidden-loss l1 --out "$tmp/kd2"

# LLM-Streamline: 3 blocks become 1; the result is a plain Llama with 6 layers.
"$topiary" streamline --model "$teacher" --drop 3 --data "$kjv/kjv-train.bin" --eval-data "$kjv/kjv-val.bin" \
  --seq-len 64 --steps 3 --global-batch 4 --micro-batch 2 --warmup 1 --eval-windows 2 --out "$tmp/sl" >"$tmp/sl.out"
"$topiary" inspect --model "$tmp/sl" --json >"$tmp/sl.json"
check "streamline leaves n-1 fewer layers" grep -q '"num_hidden_layers": 6' "$tmp/sl.json"
check "streamline names the window" grep -q "replacing blocks" "$tmp/sl.out"
"$topiary" eval --model "$tmp/sl" --data "$kjv/kjv-val.bin" --seq-len 64 --max-windows 2 --json >"$tmp/sl-eval.json"
check "the streamlined model evaluates" grep -q perplexity "$tmp/sl-eval.json"
expect_error "streamline too many blocks" 2 "drop" -- "$topiary" streamline --model "$teacher" --drop 8 \
  --data "$kjv/kjv-train.bin" --out "$tmp/sl2"

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
