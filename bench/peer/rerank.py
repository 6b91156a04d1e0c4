#!/usr/bin/env python3
"""Peer of `cpack rerank`: sentence-transformers' CrossEncoder.predict over
the same pairs JSONL ({"query": ..., "pos": [str]}), each line written back
with "pos_scores" (the logits: activation_fn Identity, as cpack's scores);
prints pairs and pairs/s as JSON. With --make-model DIR it instead writes a
MiniLM cross-encoder to rerank with: all-MiniLM-L6-v2 under a new
classification head, seeded (transformers' own initialisation)."""
import argparse
import json
import time

import torch


def make_model(base, out, seed):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    print(json.dumps({"model": out, "architecture": model.config.architectures}))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("input", nargs="?")
    ap.add_argument("--output")
    ap.add_argument("--model")
    ap.add_argument("--make-model", metavar="DIR")
    ap.add_argument("--base", default=".cache/models/all-MiniLM-L6-v2")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="under torch.autocast('cpu', bfloat16)")
    args = ap.parse_args()
    if args.make_model:
        return make_model(args.base, args.make_model, args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    from sentence_transformers import CrossEncoder
    model = CrossEncoder(args.model, device="cpu", max_length=args.max_len)
    lines = [json.loads(l) for l in open(args.input, encoding="utf-8") if l.strip()]
    pairs = [(line["query"], p) for line in lines for p in line["pos"]]
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        scores = model.predict(pairs, batch_size=args.batch, activation_fn=torch.nn.Identity(),
                               convert_to_numpy=True, show_progress_bar=False).tolist()
    seconds = time.perf_counter() - start
    at = 0
    with open(args.output, "w", encoding="utf-8") as out:
        for line in lines:
            n = len(line["pos"])
            out.write(json.dumps({**line, "pos_scores": scores[at:at + n]}, ensure_ascii=False) + "\n")
            at += n
    print(json.dumps({"pairs": len(pairs), "seconds": seconds, "pairs_per_second": len(pairs) / seconds,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16": args.bf16}))


if __name__ == "__main__":
    main()
