#!/usr/bin/env python3
"""PyTorch peer of `cpack-bench encode`: sentence-transformers encoding
throughput, median over repetitions. By default at a fixed batch shape
(batch x max_len real tokens; the first corpus texts that fill max_len); with
--real N, the same evenly spaced sample of N passages cpack-bench takes, at
their real lengths, through one `model.encode` call (which sorts by length),
in passages/s and real tokens/s. --autocast bf16 encodes under
torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's one-line bf16 (oneDNN
runs the products on AMX or AVX-512 BF16 where the CPU has them); the report
names the kernels PyTorch ran (its CPU capability and oneDNN's verbose lines
for one batch)."""
import argparse
import contextlib
import json
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer

from torch_kernels import cpu_capability, onednn_kernels


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=".cache/models/all-MiniLM-L6-v2")
    ap.add_argument("--corpus", default=".cache/data/insuranceqa-en/corpus.jsonl")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--real", type=int, help="encode N real passages instead of full batches")
    ap.add_argument("--autocast", choices=["bf16"], help="encode under CPU autocast")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_len
    docs = []
    with open(args.corpus, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            docs.append(f"{doc['title']} {doc['text']}" if doc.get("title") else doc["text"])
    if args.real:
        n = min(args.real, len(docs))
        texts = [docs[i * len(docs) // n] for i in range(n)]
    else:
        wanted = args.batch * args.batches
        texts = []
        for text in docs:
            ids = model.tokenizer(text, truncation=True, max_length=args.max_len)["input_ids"]
            if len(ids) == args.max_len:
                texts.append(text)
            if len(texts) == wanted:
                break
    tokens = sum(
        len(ids)
        for ids in model.tokenizer(texts, truncation=True, max_length=args.max_len)["input_ids"]
    )
    precision = (
        torch.autocast("cpu", dtype=torch.bfloat16) if args.autocast else contextlib.nullcontext()
    )
    with precision:
        model.encode(texts[: args.batch], batch_size=args.batch)  # warm-up
        kernels = onednn_kernels(lambda: model.encode(texts[: args.batch], batch_size=args.batch))
    rates = []
    with torch.inference_mode(), precision:
        for _ in range(args.reps):
            start = time.perf_counter()
            model.encode(texts, batch_size=args.batch, normalize_embeddings=True)
            rates.append(tokens / (time.perf_counter() - start))
    median = statistics.median(rates)
    report = {
        "benchmark": "encode",
        "mode": "real" if args.real else "full-batches",
        "backend": f"pytorch {torch.__version__} + sentence-transformers"
        + (" under bf16 autocast" if args.autocast else ""),
        "autocast": args.autocast,
        "cpu_capability": cpu_capability(),
        "onednn_kernels": kernels,
        "max_len": args.max_len,
        "batch": args.batch,
        "texts": len(texts),
        "real_tokens": tokens,
        "threads": torch.get_num_threads(),
        "tokens_per_second_median": round(median),
        "passages_per_second_median": round(median * len(texts) / tokens, 1),
        "tokens_per_second_all": [round(r) for r in rates],
    }
    shape = (
        f"{len(texts)} real passages ({tokens} tokens) at max {args.max_len}"
        if args.real
        else f"batch {args.batch} × {args.max_len} tokens"
    )
    print(
        f"encode {report['backend']} · {report['threads']} threads · {shape}: "
        f"median {report['tokens_per_second_median']} tokens/s, "
        f"{report['passages_per_second_median']} passages/s (runs: {report['tokens_per_second_all']})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
