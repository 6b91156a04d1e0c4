#!/usr/bin/env python3
"""PyTorch peer of `cpack-bench train-step`: one training step of the same
shape (queries x query_len + passages x passage_len real tokens, texts from the
corpus that fill passage_len), forward + backward + AdamW, InfoNCE over
in-batch + hard negatives (temperature 0.05), mean pooling, L2-normalised,
dropout on, gradient clipping at 1.0. Median seconds over repetitions.
--device cuda runs it on a GPU; --bf16 under bf16 autocast (f32 master
weights), as GPU training is usually run and as PyTorch's CPU autocast
recipe trains on CPUs with AMX or AVX-512 BF16. The report names the kernels
PyTorch ran (its CPU capability, oneDNN's primitives of one step)."""
import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from torch_kernels import cpu_capability, onednn_kernels


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=".cache/models/all-MiniLM-L6-v2")
    ap.add_argument("--corpus", default=".cache/data/insuranceqa-en/corpus.jsonl")
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--query-len", type=int, default=32)
    ap.add_argument("--passages", type=int, default=32)
    ap.add_argument("--passage-len", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (f32 master weights)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).to(args.device)
    model.train()
    texts = []
    with open(args.corpus, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            text = f"{doc['title']} {doc['text']}"
            if len(tok(text, truncation=True, max_length=args.passage_len)["input_ids"]) == args.passage_len:
                texts.append(text)
            if len(texts) == args.queries + args.passages:
                break
    q = tok(texts[: args.queries], truncation=True, max_length=args.query_len, padding=True, return_tensors="pt").to(args.device)
    p = tok(texts[args.queries :], truncation=True, max_length=args.passage_len, padding=True, return_tensors="pt").to(args.device)
    cuda = args.device.startswith("cuda")
    device_type = "cuda" if cuda else "cpu"
    autocast = (lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    group = args.passages // args.queries
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)

    def embed(batch):
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)

    def step():
        with autocast():
            scores = embed(q) @ embed(p).T / 0.05
            target = torch.arange(args.queries, device=args.device) * group
            loss = F.cross_entropy(scores.float(), target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return loss

    seconds = []
    for rep in range(args.reps + 1):
        start = time.perf_counter()
        loss = step()
        s = time.perf_counter() - start
        print(f"step {rep}: {s:.3f} s (loss {loss.item():.4f})", flush=True)
        if rep > 0:  # the first step warms allocators and caches
            seconds.append(s)
    median = statistics.median(seconds)
    kernels = onednn_kernels(step) if not cuda else []
    tokens = args.queries * args.query_len + args.passages * args.passage_len
    report = {
        "bench": "train-step",
        "backend": f"pytorch {torch.__version__}",
        "device": args.device,
        "bf16": args.bf16,
        "cpu_capability": cpu_capability(),
        "onednn_kernels": kernels,
        "passages_per_second": args.passages / median,
        "threads": torch.get_num_threads(),
        "tokens_per_step": tokens,
        "median_seconds": median,
        "tokens_per_second": tokens / median,
        "seconds": seconds,
    }
    print(json.dumps(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
