"""Eager-PyTorch peer of bench/model_bench: the same Llama shape, the same
forward, training step or distillation step (bf16 compute, fp32 master
weights, AdamW; kd: teacher forward without autograd, forward KL on logits,
student of --student-layers/--student-ffn), timed the same way. Prints one
line: PEER tokens_per_second=<x> torch=<version> compiled=<0|1>.

Run with Topiary's Python environment (scripts/venv: torch 2.11, the version
of the libtorch we link). Written as a user of eager PyTorch would write it,
following the Hugging Face Llama equations, with torch 2's
scaled_dot_product_attention; --compile wraps the model's
forward and the loss in torch.compile (inductor), as such a user would.
"""
import argparse
import time

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    def __init__(self, c, ff, nh, nkv, hd):
        super().__init__()
        self.nh, self.nkv, self.hd = nh, nkv, hd
        self.ln1 = torch.nn.Parameter(torch.ones(c))
        self.q = torch.nn.Linear(c, nh * hd, bias=False)
        self.k = torch.nn.Linear(c, nkv * hd, bias=False)
        self.v = torch.nn.Linear(c, nkv * hd, bias=False)
        self.o = torch.nn.Linear(nh * hd, c, bias=False)
        self.ln2 = torch.nn.Parameter(torch.ones(c))
        self.gate = torch.nn.Linear(c, ff, bias=False)
        self.up = torch.nn.Linear(c, ff, bias=False)
        self.down = torch.nn.Linear(ff, c, bias=False)

    @staticmethod
    def norm(x, w):
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        h = self.norm(x, self.ln1)
        q = self.q(h).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        rot = lambda t: torch.cat((-t[..., self.hd // 2:], t[..., :self.hd // 2]), -1)
        q = q * cos + rot(q) * sin
        k = k * cos + rot(k) * sin
        # torch 2's fused attention, causal, K/V shared by each group of query
        # heads (enable_gqa), as transformers' "sdpa" attention calls it.
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.nh != self.nkv)
        x = x + self.o(att.transpose(1, 2).reshape(B, T, -1))
        h = self.norm(x, self.ln2)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.emb = torch.nn.Embedding(a.vocab, a.hidden)
        self.blocks = torch.nn.ModuleList(
            Block(a.hidden, a.ffn, a.heads, a.kv_heads, a.hidden // a.heads) for _ in range(a.layers))
        self.lnf = torch.nn.Parameter(torch.ones(a.hidden))
        self.head = torch.nn.Linear(a.hidden, a.vocab, bias=False)
        hd = a.hidden // a.heads
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.outer(torch.arange(a.seq).float(), inv)
        emb = torch.cat((f, f), -1)
        self.cos, self.sin = emb.cos(), emb.sin()

    def forward(self, tokens):
        dt = self.emb.weight.dtype
        cos, sin = self.cos.to(dt), self.sin.to(dt)
        x = self.emb(tokens)
        for b in self.blocks:
            x = b(x, cos, sin)
        return self.head(Block.norm(x, self.lnf))


def main():
    ap = argparse.ArgumentParser()
    for name, default in (("hidden", 1024), ("ffn", 2816), ("heads", 16), ("kv-heads", 4), ("layers", 8),
                          ("vocab", 8192), ("seq", 512), ("batch", 4), ("iters", 5), ("threads", 2)):
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--student-layers", type=int, default=6)
    ap.add_argument("--student-ffn", type=int, default=2048)
    ap.add_argument("--mode", choices=("forward", "train", "kd"), default="train")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (and the teacher)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    teacher = None
    if a.mode == "kd":  # the teacher is the given shape; the student is pruned from it
        teacher = Llama(a).to(torch.bfloat16).eval()
        a.layers, a.ffn = a.student_layers, a.student_ffn
    model = Llama(a).to(torch.bfloat16)
    if a.compile:
        model = torch.compile(model)
        if teacher is not None:
            teacher = torch.compile(teacher)
    tokens = torch.randint(0, a.vocab, (a.batch, a.seq))
    targets = torch.randint(0, a.vocab, (a.batch, a.seq))
    params = [p for p in model.parameters()]
    master = [p.detach().float().clone().requires_grad_(True) for p in params]
    opt = torch.optim.AdamW(master, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step():
        if a.mode == "forward":
            with torch.no_grad():
                model(tokens)
            return
        for p in params:
            p.grad = None
        logits = model(tokens)
        if teacher is not None:  # forward KL from the teacher, tau = 1
            with torch.no_grad():
                t = F.log_softmax(teacher(tokens).float().flatten(0, 1), -1)
            s = F.log_softmax(logits.float().flatten(0, 1), -1)
            loss = (t.exp() * (t - s)).sum(-1).mean()
        else:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        for m, p in zip(master, params):
            m.grad = p.grad.float()
        torch.nn.utils.clip_grad_norm_(master, 1.0)
        opt.step()
        with torch.no_grad():
            for m, p in zip(master, params):
                p.copy_(m)

    step()
    if a.compile:
        step()  # a second warm-up: inductor may recompile once (grad mode, strides)
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    # The fastest step, as bench/bench_util.h's TimeBest: interference only adds time.
    print(f"PEER tokens_per_second={a.batch * a.seq / min(times):.1f} torch={torch.__version__.split('+')[0]} "
          f"compiled={int(a.compile)}")


if __name__ == "__main__":
    main()
