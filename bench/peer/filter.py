#!/usr/bin/env python3
"""Peer of `cpack filter`: the same pair filter written with
sentence-transformers. Streams a pairs JSONL ({"query": ..., "pos": str or
[str]}) in chunks of --chunk-pairs, encodes both sides with
normalize_embeddings=True, keeps the pairs whose cosine is >= --min-score
(a line with a list keeps the passages that reach it) and writes the kept
lines; prints pairs, kept and pairs/s as JSON."""
import argparse
import json
import time

import torch
from sentence_transformers import SentenceTransformer


def chunks(path, size):
    chunk, pairs = [], 0
    with open(path, encoding="utf-8") as f:
        for raw in f:
            if not raw.strip():
                continue
            line = json.loads(raw)
            chunk.append((raw.rstrip("\n"), line))
            pairs += 1 if isinstance(line["pos"], str) else len(line["pos"])
            if pairs >= size:
                yield chunk
                chunk, pairs = [], 0
    if chunk:
        yield chunk


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("input")
    ap.add_argument("--output", required=True)
    ap.add_argument("--model", default=".cache/models/all-MiniLM-L6-v2")
    ap.add_argument("--min-score", type=float, default=0.43)
    ap.add_argument("--chunk-pairs", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="under torch.autocast('cpu', bfloat16)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_len
    encode = lambda texts: model.encode(texts, batch_size=args.batch, normalize_embeddings=True, convert_to_tensor=True)
    pairs = kept = 0
    start = time.perf_counter()
    with open(args.output, "w", encoding="utf-8") as out, torch.inference_mode(), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        for chunk in chunks(args.input, args.chunk_pairs):
            queries, passages = [], []
            for _, line in chunk:
                for p in [line["pos"]] if isinstance(line["pos"], str) else line["pos"]:
                    queries.append(line["query"])
                    passages.append(p)
            scores = (encode(queries).float() * encode(passages).float()).sum(dim=1).tolist()
            at = 0
            for raw, line in chunk:
                listed = not isinstance(line["pos"], str)
                pos = line["pos"] if listed else [line["pos"]]
                keep = [p for p, s in zip(pos, scores[at:at + len(pos)]) if s >= args.min_score]
                at += len(pos)
                pairs += len(pos)
                kept += len(keep)
                if len(keep) == len(pos):
                    out.write(raw + "\n")
                elif keep:
                    out.write(json.dumps({**line, "pos": keep}, ensure_ascii=False) + "\n")
    seconds = time.perf_counter() - start
    print(json.dumps({"pairs": pairs, "kept": kept, "seconds": seconds, "pairs_per_second": pairs / seconds,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16": args.bf16}))


if __name__ == "__main__":
    main()
