"""The findings suite: the compression papers' claims, measured with Topiary.

  /usr/bin/python3 bench/findings/findings.py [--quick] [--seeds N] [--out DIR] [CLAIM ...]

Each claim runs real `topiary` commands (importance, prune, train, distill,
streamline, eval) on the bundled teacher and the King James data, once per
seed (the seed sets the calibration sample and the training data order),
and writes DIR/<claim>.json (every measurement per seed, their mean and
spread, the criterion, the verdict and its reason, and where and when it was
measured) and DIR/<claim>.svg (a bar chart of the compared arms, the bar the
mean, the whisker the min-max over seeds). DIR defaults to results/findings;
the README's findings table is generated from those files
(scripts/results_tables). --quick runs each claim at a tiny budget (one seed)
to keep the scripts working; its verdicts mean nothing.

Verdicts: "holds", "does not hold here", or "inconclusive" when the arms'
spreads over seeds overlap. Budgets are sized for the 8M teacher on 2 cores.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svg_chart  # noqa: E402


class Budget:
    def __init__(self, quick):
        self.quick = quick
        self.seq_len = 64 if quick else 256
        self.samples = 4 if quick else 64        # calibration sequences
        self.eval_windows = 4 if quick else 64   # held-out windows of seq_len
        self.tokens = 2048 if quick else 300_000  # a recovery's training tokens
        self.short_tokens = 1024 if quick else 100_000  # "a short healing/distillation"
        self.global_batch = 16
        self.micro_batch = 8
        self.warmup = 1 if quick else 10


class Topiary:
    """Runs topiary commands into a work directory; every command's output is kept in a log."""

    def __init__(self, work, budget, teacher):
        self.bin = os.path.join(os.environ.get("TOPIARY_BIN_DIR", os.path.join(ROOT, "build", "bin")), "topiary")
        self.kjv = os.environ.get("TOPIARY_KJV_DIR", os.path.join(ROOT, "build", "kjv"))
        self.work = work
        self.b = budget
        self.teacher = teacher
        os.makedirs(work, exist_ok=True)

    def run(self, name, *args):
        log = os.path.join(self.work, name + ".log")
        t0 = time.monotonic()
        with open(log, "w") as f:
            r = subprocess.run([self.bin, *map(str, args)], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        if r.returncode != 0:
            tail = open(log).read()[-2000:]
            raise RuntimeError(f"topiary {args[0]} ({name}) exited {r.returncode}:\n{tail}")
        return time.monotonic() - t0

    def path(self, name):
        return os.path.join(self.work, name)

    def once(self, name, marker, *args):
        """Runs `topiary args...` into work/name unless an earlier run with the same arguments left `marker`
        there (a rerun of the suite reuses what it already computed, and nothing stale)."""
        out = self.path(name)
        stamp = os.path.join(self.work, name + ".args.json")
        argv = [str(a) for a in args]
        if os.path.exists(os.path.join(out, marker)) and os.path.exists(stamp) and json.load(open(stamp)) == argv:
            return out
        shutil.rmtree(out, ignore_errors=True)
        self.run(name, *args)
        json.dump(argv, open(stamp, "w"))
        return out

    def importance(self, name, seed, depth="lm_loss,magnitude_l1,reverse_order,random", batch_agg="l2",
                   seq_agg="mean", model=None):
        out = self.once(name, "scores.json", "importance", "--model", model or self.teacher, "--data",
                        self.data("train"), "--seq-len", self.b.seq_len, "--samples", self.b.samples, "--batch",
                        min(8, self.b.samples), "--seed", seed, "--depth", depth, "--batch-agg", batch_agg,
                        "--seq-agg", seq_agg, "--out", self.path(name))
        return json.load(open(os.path.join(out, "scores.json")))

    def prune(self, name, *args, model=None):
        return self.once(name, "config.json", "prune", "--model", model or self.teacher, *args, "--no-sync",
                         "--out", self.path(name))

    def recipe(self, seed, tokens, lr=None):
        lr = lr or ("2e-3" if tokens >= self.b.tokens else "1e-3")  # a short healing takes a gentler rate
        return ["--data", self.data("train"), "--eval-data", self.data("val"), "--seq-len", self.b.seq_len,
                "--tokens", tokens, "--global-batch", self.b.global_batch, "--micro-batch", self.b.micro_batch,
                "--warmup", self.b.warmup, "--lr", lr, "--min-lr", f"{float(lr) / 10:g}", "--seed", seed,
                "--log-every", 1000, "--eval-windows", 4, "--peak-flops", 0]

    def train(self, name, model, seed, tokens, *extra, lr=None):
        return self.once(name, "config.json", "train", "--model", model, *self.recipe(seed, tokens, lr), *extra,
                         "--out", self.path(name))

    def distill(self, name, student, seed, tokens, *extra, teacher=None):
        return self.once(name, "config.json", "distill", "--teacher", teacher or self.teacher, "--student",
                         student, *self.recipe(seed, tokens), *extra, "--out", self.path(name))

    def streamline(self, name, seed, tokens, drop, first):
        return self.once(name, "config.json", "streamline", "--model", self.teacher, "--drop", drop, "--first",
                         first, *self.recipe(seed, tokens), "--out", self.path(name))

    def eval(self, model):
        """Held-out perplexity, KL to the teacher and top-1 agreement (cached until the model changes)."""
        key = os.path.relpath(model, ROOT).replace("/", "_")
        cache = os.path.join(self.work, "eval-" + key + ".json")
        stamp = [os.path.getmtime(os.path.join(model, f)) for f in sorted(os.listdir(model))]
        if os.path.exists(cache):
            c = json.load(open(cache))
            if c.get("stamp") == stamp:
                return c["result"]
        r = subprocess.run([self.bin, "eval", "--model", model, "--teacher", self.teacher, "--data",
                            self.data("val"), "--seq-len", str(self.b.seq_len), "--max-windows",
                            str(self.b.eval_windows), "--json"], capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError(f"topiary eval {model}: {r.stdout[-1000:]}{r.stderr[-1000:]}")
        result = json.loads(r.stdout)
        json.dump({"stamp": stamp, "result": result}, open(cache, "w"))
        return result

    def ppl(self, model):
        return self.eval(model)["perplexity"]

    def non_embedding_params(self, model):
        r = subprocess.run([self.bin, "inspect", "--model", model, "--json"], capture_output=True, text=True,
                           cwd=ROOT, check=True)
        return json.loads(r.stdout)["params"]["non_embedding"]

    def data(self, split):
        return os.path.join(self.kjv, f"kjv-{split}.bin")


# A short CE "healing" of a lightly pruned model: a rate near the end of the teacher's own schedule (its
# training ended at 1.5e-4). At 1e-3 a 100K-token fine-tune made the held-out perplexity of a 2-of-8-blocks
# removal worse, not better (69.2 -> 70.7): it measured the disruption, not the healing.
HEAL_LR = "3e-4"


def lowest(scores, k, exclude=()):
    """Indices of the k smallest scores (ties by index), skipping `exclude`."""
    order = sorted((s, i) for i, s in enumerate(scores) if i not in exclude)
    return sorted(i for _, i in order[:k])


def stats(values):
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def separated(a, b):
    """True when the min-max ranges over seeds do not overlap (one arm is better on every seed's range)."""
    return a["max"] < b["min"] or b["max"] < a["min"]


def compare_lower(arms, best, others, what):
    """Verdict for 'arm `best` has the lowest value': holds / does not hold here / inconclusive."""
    s = {k: stats(v) for k, v in arms.items()}
    rivals = [o for o in others if o != best]
    winner = min(s, key=lambda k: s[k]["mean"])
    if winner == best:
        close = [o for o in rivals if not separated(s[best], s[o])]
        if close and s[best]["n"] > 1:
            return "inconclusive", (f"{best} has the lowest mean {what} ({s[best]['mean']:.2f}) but its range "
                                    f"over seeds overlaps {', '.join(close)}'s")
        return "holds", f"{best} has the lowest {what}: {s[best]['mean']:.2f} vs best rival " \
                        f"{min(rivals, key=lambda k: s[k]['mean'])} {min(s[o]['mean'] for o in rivals):.2f}"
    if s[winner]["n"] > 1 and not separated(s[best], s[winner]):
        return "inconclusive", (f"{winner} has a lower mean {what} ({s[winner]['mean']:.2f}) than {best} "
                                f"({s[best]['mean']:.2f}), within the spread over seeds")
    return "does not hold here", (f"{winner} has a lower {what} ({s[winner]['mean']:.2f}) than {best} "
                                  f"({s[best]['mean']:.2f})")


# ---- the claims ------------------------------------------------------------------------------------------
# Each takes (t: Topiary for one seed's work directory, seed) and returns a dict of named measurements; the
# CLAIMS table gives the paper, the claim, the arms plotted and the verdict over seeds.

def shortgpt_bi(t, seed):
    """ShortGPT: block influence ranks late-middle layers least important; removing the lowest-BI blocks
    beats removing as many by another depth metric (before any recovery)."""
    s = t.importance("importance", seed)
    L = len(s["depth"]["block_influence"])
    k = max(1, L // 4)
    out = {"layers": L, "removed": k}
    bi = lowest(s["depth"]["block_influence"], k)
    out["bi_layers"] = bi
    out["bi_in_late_middle"] = all(L // 2 <= i < L - 1 for i in bi)
    for metric in ("block_influence", "lm_loss", "magnitude_l1", "reverse_order", "random"):
        layers = list(range(L - k, L)) if metric == "reverse_order" else lowest(s["depth"][metric], k)
        model = t.prune(f"drop-{metric}", "--drop-layers", ",".join(map(str, layers)))
        out[f"ppl_{metric}"] = t.ppl(model)
        out[f"layers_{metric}"] = layers
    return out


def llm_drop(t, seed):
    """LLM-Drop / What Matters in Transformers: dropping attention sublayers costs far less than dropping
    as many MLP sublayers."""
    s = t.importance("importance", seed)
    L = len(s["depth"]["attention_influence"])
    out = {"teacher_ppl": t.ppl(t.teacher)}
    for n in (L // 4, L // 2):
        att = lowest(s["depth"]["attention_influence"], n)
        mlp = lowest(s["depth"]["mlp_influence"], n)
        out[f"ppl_attention_{n}"] = t.ppl(t.prune(f"drop-attn-{n}", "--drop-attention", ",".join(map(str, att))))
        out[f"ppl_mlp_{n}"] = t.ppl(t.prune(f"drop-mlp-{n}", "--drop-mlp", ",".join(map(str, mlp))))
    return out


def angular_window(scores, n):
    """The window of n consecutive blocks whose input and output are closest in angle (Gromov et al.)."""
    d = scores["depth"]["angular_distance_windows"][str(n)]
    first = min(range(len(d)), key=lambda i: d[i])
    return list(range(first, first + n))


def gromov_angular(t, seed):
    """Gromov et al.: the angular distance between a window's input and output picks a contiguous deep
    window whose removal is cheap after a short healing."""
    s = t.importance("importance", seed)
    L = len(s["depth"]["block_influence"])
    n = max(1, L // 4)
    window = angular_window(s, n)
    pruned = t.prune("drop-angular", "--drop-layers", ",".join(map(str, window)))
    healed = t.train("heal-angular", pruned, seed, t.b.short_tokens, lr=HEAL_LR)
    # The same number of blocks by block influence, healed the same way, for scale.
    bi = t.prune("drop-bi", "--drop-layers", ",".join(map(str, lowest(s["depth"]["block_influence"], n))))
    healed_bi = t.train("heal-bi", bi, seed, t.b.short_tokens, lr=HEAL_LR)
    return {"removed": n, "window": window, "window_in_deeper_half": min(window) >= L // 2,
            "teacher_ppl": t.ppl(t.teacher), "ppl_angular_unhealed": t.ppl(pruned),
            "ppl_angular_healed": t.ppl(healed), "ppl_bi_healed": t.ppl(healed_bi)}


def reverse_order(t, seed):
    """Reassessing layer pruning: removing the last blocks (reverse order) is competitive with the
    importance metrics after fine-tuning."""
    s = t.importance("importance", seed)
    L = len(s["depth"]["block_influence"])
    k = max(1, L // 4)
    out = {}
    for metric in ("reverse_order", "block_influence", "lm_loss", "random"):
        layers = list(range(L - k, L)) if metric == "reverse_order" else lowest(s["depth"][metric], k)
        pruned = t.prune(f"drop-{metric}", "--drop-layers", ",".join(map(str, layers)))
        out[f"ppl_{metric}"] = t.ppl(t.train(f"heal-{metric}", pruned, seed, t.b.short_tokens, lr=HEAL_LR))
    return out


def width_student(t, seed):
    """Half the non-embedding parameters by width: MLP, heads and KV groups halved, hidden kept."""
    t.importance("importance", seed)
    return t.prune("width", "--scores", os.path.join(t.path("importance"), "scores.json"), "--target",
                   "intermediate_size=384,num_attention_heads=4,num_key_value_heads=2")


def depth_student(t, seed):
    """Half the non-embedding parameters by depth: the half of the blocks whose removal costs least LM loss."""
    s = t.importance("importance", seed)
    L = len(s["depth"]["block_influence"])
    return t.prune("depth", "--scores", os.path.join(t.path("importance"), "scores.json"), "--target",
                   f"num_hidden_layers={L // 2}", "--depth-metric", "lm_loss")


def kd_vs_ce(t, seed):
    """Minitron: distillation from the teacher beats cross-entropy training at equal tokens, and at equal
    compute (CE then gets the tokens a KD step's teacher forward would have cost)."""
    width = width_student(t, seed)
    n_s, n_t = t.non_embedding_params(width), t.non_embedding_params(t.teacher)
    # Per token: a KD step is the student's forward+backward (6 N_s) plus the teacher's forward (2 N_t).
    ce_equal_compute = int(t.b.tokens * (6 * n_s + 2 * n_t) / (6 * n_s))
    ce_equal_compute -= ce_equal_compute % (t.b.global_batch * t.b.seq_len)
    return {"ppl_pruned": t.ppl(width),
            "ppl_kd": t.ppl(t.distill("kd", width, seed, t.b.tokens)),
            "ppl_ce": t.ppl(t.train("ce", width, seed, t.b.tokens)),
            "ppl_ce_equal_compute": t.ppl(t.train("ce-compute", width, seed, ce_equal_compute)),
            "ce_equal_compute_tokens": ce_equal_compute}


def width_vs_depth(t, seed):
    """Minitron: after distillation, width pruning beats depth pruning at equal parameters."""
    width, depth = width_student(t, seed), depth_student(t, seed)
    return {"params_width": t.non_embedding_params(width), "params_depth": t.non_embedding_params(depth),
            "ppl_width_kd": t.ppl(t.distill("width-kd", width, seed, t.b.tokens)),
            "ppl_depth_kd": t.ppl(t.distill("depth-kd", depth, seed, t.b.tokens))}


def partial_vs_lora(t, seed):
    """Reassessing layer pruning: fine-tuning only the last layers (and head) recovers a depth-pruned model
    better than LoRA at the same tokens."""
    depth = depth_student(t, seed)
    return {"ppl_partial": t.ppl(t.train("partial", depth, seed, t.b.tokens, "--train-last-blocks", 2)),
            "ppl_lora": t.ppl(t.train("lora", depth, seed, t.b.tokens, "--lora-rank", 16, "--lora-alpha", 32,
                                      "--weight-decay", 0, lr="4e-3"))}


def streamline_vs_removal(t, seed):
    """LLM-Streamline: a trained lightweight replacement for a window of blocks beats removing the same
    window (with or without the same training spent on fine-tuning the pruned model)."""
    s = t.importance("importance", seed)
    L = len(s["depth"]["block_influence"])
    n = L // 2 + 1 if not t.b.quick else 2
    window = angular_window(s, n)
    streamlined = t.streamline("streamline", seed, t.b.tokens, n, window[0])
    removed = t.prune("removed", "--drop-layers", ",".join(map(str, window)))
    return {"window": window, "ppl_streamline": t.ppl(streamlined), "ppl_removed": t.ppl(removed),
            "ppl_removed_finetuned": t.ppl(t.train("removed-ft", removed, seed, t.b.tokens))}


def head_redistribution(t, seed):
    """Minitron: redistributing the pruned heads' residual into the kept heads beats plain head pruning."""
    t.importance("importance", seed)
    scores = os.path.join(t.path("importance"), "scores.json")
    # Half the query heads of every KV group (8 over 4 groups -> 4 over 4): redistribution works inside a
    # group, so a target that drops whole groups would leave nothing to redistribute.
    target = "num_attention_heads=4,num_key_value_heads=4"
    plain = t.prune("heads-plain", "--scores", scores, "--target", target)
    redis = t.prune("heads-redistributed", "--scores", scores, "--target", target, "--redistribute-heads")
    return {"ppl_plain": t.ppl(plain), "ppl_redistributed": t.ppl(redis),
            "ppl_plain_kd": t.ppl(t.distill("plain-kd", plain, seed, t.b.short_tokens)),
            "ppl_redistributed_kd": t.ppl(t.distill("redistributed-kd", redis, seed, t.b.short_tokens))}


AGGREGATIONS = [("l2", "mean"), ("mean", "mean"), ("l2", "l2"), ("mean", "l2"), ("var", "mean")]


def aggregation(t, seed):
    """Minitron: (batch L2, sequence mean) aggregation of activations ranks width best after a short
    distillation, among the aggregation choices."""
    out = {}
    for b, q in AGGREGATIONS:
        name = f"{b}-{q}"
        t.importance("importance-" + name, seed, depth="", batch_agg=b, seq_agg=q)
        pruned = t.prune("width-" + name, "--scores", os.path.join(t.path("importance-" + name), "scores.json"),
                         "--target", "intermediate_size=384,num_attention_heads=4,num_key_value_heads=2")
        out[f"ppl_{name}"] = t.ppl(t.distill("kd-" + name, pruned, seed, t.b.short_tokens))
    return out


def iterative(t, seed):
    """Minitron: iterative prune -> distill -> prune -> distill beats one-shot pruning at the same final size
    and the same total tokens."""
    target = "intermediate_size=384,num_attention_heads=4,num_key_value_heads=2"
    half = "intermediate_size=576,num_attention_heads=6,num_key_value_heads=3"
    t.importance("importance", seed)
    one = t.prune("one-shot", "--scores", os.path.join(t.path("importance"), "scores.json"), "--target", target)
    one_kd = t.distill("one-shot-kd", one, seed, t.b.tokens)
    step1 = t.prune("step1", "--scores", os.path.join(t.path("importance"), "scores.json"), "--target", half)
    step1_kd = t.distill("step1-kd", step1, seed, t.b.tokens // 2)
    t.importance("importance-step1", seed, depth="", model=step1_kd)
    step2 = t.prune("step2", "--scores", os.path.join(t.path("importance-step1"), "scores.json"), "--target",
                    target, model=step1_kd)
    step2_kd = t.distill("step2-kd", step2, seed, t.b.tokens // 2)
    return {"ppl_one_shot": t.ppl(one_kd), "ppl_iterative": t.ppl(step2_kd)}


def ranks(values):
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5 if va > 0 and vb > 0 else 1.0


SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers")


def search_rerank(t, seed):
    """Minitron: ranking the search's candidates by their loss right after pruning (zero-shot) is a poor guide:
    a short distillation of each re-ranks them."""
    t.importance("importance", seed)
    scores = os.path.join(t.path("importance"), "scores.json")
    k = 3 if t.b.quick else 6
    t.once("search", "search.json", "search", "--model", t.teacher, "--scores", scores, "--data", t.data("train"),
           "--params", "0.6", "--max-candidates", k, "--seq-len", t.b.seq_len, "--max-windows",
           t.b.eval_windows, "--out", t.path("search"))
    candidates = json.load(open(os.path.join(t.path("search"), "search.json")))["candidates"][:k]
    out = {"candidates": [{key: c[key] for key in SHAPE_KEYS} for c in candidates]}
    zero, kd = [], []
    for i, c in enumerate(candidates):
        pruned = t.prune(f"candidate-{i}", "--scores", scores, "--target",
                         ",".join(f"{key}={c[key]}" for key in SHAPE_KEYS))
        zero.append(t.ppl(pruned))
        kd.append(t.ppl(t.distill(f"candidate-{i}-kd", pruned, seed, t.b.short_tokens)))
        out[f"ppl_zero_shot_{i}"], out[f"ppl_kd_{i}"] = zero[-1], kd[-1]
    out["spearman"] = spearman(zero, kd)
    out["zero_shot_best"] = min(range(len(zero)), key=lambda i: zero[i])
    out["kd_best"] = min(range(len(kd)), key=lambda i: kd[i])
    return out


def verdict_rerank(m):
    rho = stats(m["spearman"])
    changed = sum(a != b for a, b in zip(m["zero_shot_best"], m["kd_best"]))
    why = (f"Spearman rank correlation between zero-shot and post-distillation perplexity {rho['mean']:.2f} "
           f"(min {rho['min']:.2f}, max {rho['max']:.2f}); the best candidate changes on {changed} of "
           f"{rho['n']} seeds (criterion: correlation below 0.8)")
    return ("holds" if rho["mean"] < 0.8 else "does not hold here"), why


ORDER = ["does not hold here", "inconclusive", "holds"]


def verdict_shortgpt(m):
    # Two parts: where the lowest-BI blocks lie, and whether removing them beats the other metrics.
    v, why = compare_lower({k: m[f"ppl_{k}"] for k in ("block_influence", "lm_loss", "magnitude_l1",
                                                         "reverse_order", "random")},
                           "block_influence", ["lm_loss", "magnitude_l1", "reverse_order", "random"], "perplexity")
    late = sum(m["bi_in_late_middle"]) / len(m["bi_in_late_middle"])
    where = "holds" if late == 1 else "does not hold here" if late == 0 else "inconclusive"
    layers = sorted({tuple(x) for x in m["bi_layers"]})
    why = (f"lowest-BI blocks {', '.join(str(list(x)) for x in layers)} of {m['layers'][0]}: late-middle on "
           f"{late:.0%} of seeds; removal: {why}")
    return ORDER[min(ORDER.index(v), ORDER.index(where))], why


def verdict_llm_drop(m):
    keys = sorted({k.rsplit("_", 1)[1] for k in m if k.startswith("ppl_attention_")}, key=int)
    ratios = []
    for n in keys:
        t = stats(m["teacher_ppl"])["mean"]
        a, b = stats(m[f"ppl_attention_{n}"])["mean"] - t, stats(m[f"ppl_mlp_{n}"])["mean"] - t
        ratios.append((n, a / b if b > 0 else float("inf")))
    ok = all(r < 0.5 for _, r in ratios)
    why = "; ".join(f"{n} sublayers: attention costs {r:.2f}x the MLP's perplexity increase" for n, r in ratios)
    return ("holds" if ok else "does not hold here"), why + " (criterion: below 0.5x)"


def verdict_gromov(m):
    deep = sum(m["window_in_deeper_half"]) / len(m["window_in_deeper_half"])
    t, un, healed = (stats(m[k])["mean"] for k in ("teacher_ppl", "ppl_angular_unhealed", "ppl_angular_healed"))
    recovered = (un - healed) / (un - t) if un > t else 1.0
    why = (f"the window is in the deeper half on {deep:.0%} of seeds; healing recovers {recovered:.0%} of the "
           f"removal's perplexity increase ({un:.1f} -> {healed:.1f}, teacher {t:.1f}; criterion: >= 50%)")
    return ("holds" if deep == 1 and recovered >= 0.5 else "does not hold here"), why


def verdict_reverse(m):
    s = {k: stats(m[f"ppl_{k}"]) for k in ("reverse_order", "block_influence", "lm_loss", "random")}
    best = min(s, key=lambda k: s[k]["mean"])
    gap = s["reverse_order"]["mean"] / s[best]["mean"] - 1
    why = f"after healing, reverse order {s['reverse_order']['mean']:.2f} vs best {best} {s[best]['mean']:.2f} " \
          f"({gap:+.1%}; criterion: within 5%)"
    return ("holds" if gap <= 0.05 else "does not hold here"), why


def lower_than(a, b, what):
    def verdict(m):
        sa, sb = stats(m[a]), stats(m[b])
        if sa["mean"] < sb["mean"]:
            if sa["n"] > 1 and not separated(sa, sb):
                return "inconclusive", f"{what}: {sa['mean']:.2f} vs {sb['mean']:.2f}, ranges over seeds overlap"
            return "holds", f"{what}: {sa['mean']:.2f} vs {sb['mean']:.2f}"
        if sa["n"] > 1 and not separated(sa, sb):
            return "inconclusive", f"{what}: {sa['mean']:.2f} vs {sb['mean']:.2f}, ranges over seeds overlap"
        return "does not hold here", f"{what}: {sa['mean']:.2f} vs {sb['mean']:.2f}"
    return verdict


def verdict_kd(m):
    v1, w1 = lower_than("ppl_kd", "ppl_ce", "KD vs CE at equal tokens")(m)
    v2, w2 = lower_than("ppl_kd", "ppl_ce_equal_compute", "KD vs CE at equal compute")(m)
    return ORDER[min(ORDER.index(v1), ORDER.index(v2))], f"{w1}; {w2}"


def verdict_aggregation(m):
    arms = {f"{b}-{q}": m[f"ppl_{b}-{q}"] for b, q in AGGREGATIONS}
    return compare_lower(arms, "l2-mean", list(arms), "perplexity after a short KD")


CLAIMS = {
    "shortgpt_block_influence": dict(
        paper="ShortGPT (Men et al., 2024)", fn=shortgpt_bi, verdict=verdict_shortgpt,
        claim="block influence marks late-middle layers least important; removing the lowest-BI blocks beats "
              "removing as many by another depth metric (no recovery)",
        arms=["ppl_block_influence", "ppl_lm_loss", "ppl_magnitude_l1", "ppl_reverse_order", "ppl_random"],
        ylabel="held-out perplexity after removing L/4 blocks"),
    "llm_drop_attention_vs_mlp": dict(
        paper="LLM-Drop / What Matters in Transformers (He et al., 2024)", fn=llm_drop, verdict=verdict_llm_drop,
        claim="dropping attention sublayers costs far less than dropping as many MLP sublayers",
        arms=None, ylabel="held-out perplexity"),
    "gromov_angular_window": dict(
        paper="Gromov et al., 2024 (The Unreasonable Ineffectiveness of the Deeper Layers)", fn=gromov_angular,
        verdict=verdict_gromov,
        claim="angular distance picks a contiguous deep window whose removal is cheap after a short healing",
        arms=["teacher_ppl", "ppl_angular_unhealed", "ppl_angular_healed", "ppl_bi_healed"],
        ylabel="held-out perplexity"),
    "reverse_order": dict(
        paper="Reassessing Layer Pruning in LLMs (Lu et al., 2024)", fn=reverse_order, verdict=verdict_reverse,
        claim="removing the last blocks (reverse order) is competitive with importance metrics after fine-tuning",
        arms=["ppl_reverse_order", "ppl_block_influence", "ppl_lm_loss", "ppl_random"],
        ylabel="held-out perplexity after removing L/4 blocks and a short fine-tuning"),
    "partial_layer_vs_lora": dict(
        paper="Reassessing Layer Pruning in LLMs (Lu et al., 2024)", fn=partial_vs_lora,
        verdict=lower_than("ppl_partial", "ppl_lora", "last 2 blocks + head vs LoRA r=16"),
        claim="fine-tuning only the last layers recovers a depth-pruned model better than LoRA",
        arms=["ppl_partial", "ppl_lora"], ylabel="held-out perplexity"),
    "kd_vs_ce": dict(
        paper="Minitron (Muralidharan et al., 2024)", fn=kd_vs_ce, verdict=verdict_kd,
        claim="distillation beats cross-entropy training at equal tokens and at equal compute",
        arms=["ppl_pruned", "ppl_ce", "ppl_ce_equal_compute", "ppl_kd"], ylabel="held-out perplexity"),
    "width_vs_depth": dict(
        paper="Minitron (Muralidharan et al., 2024)", fn=width_vs_depth,
        verdict=lower_than("ppl_width_kd", "ppl_depth_kd", "width vs depth after KD"),
        claim="after distillation, width pruning beats depth pruning at equal parameters",
        arms=["ppl_width_kd", "ppl_depth_kd"], ylabel="held-out perplexity"),
    "head_redistribution": dict(
        paper="Minitron (Muralidharan et al., 2024)", fn=head_redistribution,
        verdict=lower_than("ppl_redistributed_kd", "ppl_plain_kd", "redistributed vs plain heads after a short KD"),
        claim="adding the pruned heads' residual to the kept heads beats plain head pruning",
        arms=["ppl_plain", "ppl_redistributed", "ppl_plain_kd", "ppl_redistributed_kd"],
        ylabel="held-out perplexity"),
    "aggregation": dict(
        paper="Minitron (Muralidharan et al., 2024)", fn=aggregation, verdict=verdict_aggregation,
        claim="(batch L2, sequence mean) aggregation ranks width best after a short distillation",
        arms=[f"ppl_{b}-{q}" for b, q in AGGREGATIONS], ylabel="held-out perplexity after a short KD"),
    "search_rerank": dict(
        paper="Minitron (Muralidharan et al., 2024)", fn=search_rerank, verdict=verdict_rerank,
        claim="a short distillation re-ranks the search's candidates against their zero-shot loss",
        arms=None, ylabel="held-out perplexity per candidate: zero-shot, after a short KD"),
    "iterative_vs_one_shot": dict(
        paper="Minitron (Muralidharan et al., 2024)", fn=iterative,
        verdict=lower_than("ppl_iterative", "ppl_one_shot", "iterative vs one-shot at equal tokens"),
        claim="iterative prune-distill beats one-shot pruning at the same final size and tokens",
        arms=["ppl_one_shot", "ppl_iterative"], ylabel="held-out perplexity"),
    "streamline_vs_removal": dict(
        paper="LLM-Streamline (Chen et al., 2024)", fn=streamline_vs_removal,
        verdict=lower_than("ppl_streamline", "ppl_removed_finetuned",
                           "trained replacement vs removal + fine-tuning of the same window"),
        claim="a trained replacement block beats plain removal of the same window",
        arms=["ppl_removed", "ppl_removed_finetuned", "ppl_streamline"], ylabel="held-out perplexity"),
}


# Claims about depth, also measured on the deeper teacher (--deep-teacher, bench/findings/deep_teacher).
DEPTH_CLAIMS = ["shortgpt_block_influence", "llm_drop_attention_vs_mlp", "gromov_angular_window", "reverse_order",
                "streamline_vs_removal", "width_vs_depth"]


def numeric_summary(measured):
    """mean/sd/min/max of every measurement that is a number on each seed."""
    return {k: stats(v) for k, v in measured.items()
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)}


def write_result(path, spec, result):
    """path.json (the result) and path.svg (its arms' bars)."""
    json.dump(result, open(path + ".json", "w"), indent=1)
    measured = result["measurements"]
    arms = spec["arms"] or sorted(k for k in result["summary"] if k.startswith("ppl_") or k == "teacher_ppl")
    svg_chart.bars(path + ".svg", f"{spec['paper']} ({result['teacher_layers']}-layer teacher): {result['verdict']}",
                   spec["ylabel"], [(a.removeprefix("ppl_"), measured[a]) for a in arms if a in measured])


def run_claim(name, spec, seeds, budget, work_root, out_dir, teacher, tag=""):
    per_seed = []
    t0 = time.monotonic()
    layers = json.load(open(os.path.join(teacher, "config.json")))["num_hidden_layers"]
    for seed in seeds:
        t = Topiary(os.path.join(work_root, name + tag, f"seed-{seed}"), budget, teacher)
        per_seed.append(spec["fn"](t, seed))
    measured = {k: [m[k] for m in per_seed] for k in per_seed[0]}
    verdict, reason = spec["verdict"](measured)
    meta = json.loads(subprocess.run([os.path.join(ROOT, "scripts", "run_meta"), "/dev/stdout"],
                                     capture_output=True, text=True, check=True).stdout)
    result = {"claim": name + tag, "paper": spec["paper"], "statement": spec["claim"], "quick": budget.quick,
              "seeds": list(seeds), "teacher": os.path.basename(os.path.normpath(teacher)),
              "teacher_layers": layers,
              "budget": {"seq_len": budget.seq_len, "calibration_sequences": budget.samples,
                         "eval_windows": budget.eval_windows, "tokens": budget.tokens,
                         "short_tokens": budget.short_tokens},
              "measurements": measured, "summary": numeric_summary(measured), "verdict": verdict, "reason": reason,
              "seconds": round(time.monotonic() - t0, 1), "meta": meta}
    os.makedirs(out_dir, exist_ok=True)
    write_result(os.path.join(out_dir, name + tag), spec, result)
    print(f"{name}{tag}: {verdict} — {reason} ({result['seconds']:.0f} s)", flush=True)
    return result


def reverdict(out_dir, names):
    for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
        r = json.load(open(path))
        base = r["claim"].split(".")[0]
        if names and base not in names:
            continue
        spec = CLAIMS[base]
        r["verdict"], r["reason"] = spec["verdict"](r["measurements"])
        write_result(path[:-5], spec, r)
        print(f"{r['claim']}: {r['verdict']} — {r['reason']}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("claims", nargs="*", help=f"claims to run (default: all): {', '.join(CLAIMS)}")
    ap.add_argument("--quick", action="store_true", help="a tiny budget and one seed (CI: the scripts work)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="result directory (default results/findings; --quick: "
                                                "build/findings-quick/results)")
    ap.add_argument("--work", default=None, help="work directory (default build/findings[-quick])")
    ap.add_argument("--teacher", default=os.path.join(ROOT, "models", "kjv-llama-8m"))
    ap.add_argument("--deep-teacher", help="also run the depth claims with this (deeper) teacher, as "
                                           "<claim>.deep (bench/findings/deep_teacher makes one)")
    ap.add_argument("--deep-only", action="store_true", help="with --deep-teacher: only the deeper teacher's runs "
                                                             "(the bundled teacher's results are left as they are)")
    ap.add_argument("--fresh", action="store_true", help="remove the work directory first")
    ap.add_argument("--list", action="store_true", help="print the claims' names and exit")
    ap.add_argument("--reverdict", action="store_true",
                    help="recompute the verdicts of the result files in --out from their stored measurements "
                         "(after a change of criterion; nothing is rerun)")
    args = ap.parse_args()
    if args.list:
        print(" ".join(CLAIMS))
        return 0
    if args.reverdict:
        return reverdict(args.out or os.path.join(ROOT, "results", "findings"), args.claims)
    unknown = [c for c in args.claims if c not in CLAIMS]
    if unknown:
        print(f"findings: unknown claim {', '.join(unknown)} (known: {', '.join(CLAIMS)})", file=sys.stderr)
        return 2
    budget = Budget(args.quick)
    seeds = [0] if args.quick else list(range(args.seeds))
    work = args.work or os.path.join(ROOT, "build", "findings-quick" if args.quick else "findings")
    out = args.out or (os.path.join(work, "results") if args.quick else os.path.join(ROOT, "results", "findings"))
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    failed = 0
    runs = [(name, os.path.abspath(args.teacher), "") for name in args.claims or list(CLAIMS)]
    if args.deep_teacher:
        deep = [(name, os.path.abspath(args.deep_teacher), ".deep") for name, _, _ in runs if name in DEPTH_CLAIMS]
        runs = deep if args.deep_only else runs + deep
    elif args.deep_only:
        print("findings: --deep-only needs --deep-teacher", file=sys.stderr)
        return 2
    for name, teacher, tag in runs:
        try:
            run_claim(name, CLAIMS[name], seeds, budget, work, out, teacher, tag)
        except Exception as e:  # one claim's failure does not stop the others
            print(f"{name}{tag}: FAILED: {e}", file=sys.stderr, flush=True)
            failed += 1
    print(f"SUMMARY findings runs={len(runs)} failed={failed} quick={args.quick} "
          f"seeds={len(seeds)} out={os.path.relpath(out, ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
