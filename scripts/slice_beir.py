#!/usr/bin/env python3
"""A small, self-consistent slice of a BEIR folder: the first --passages
passages, and up to --train / --test queries of each split whose positives
all lie in the slice. For quick end-to-end runs (scripts/test-wheel.sh)."""
import argparse
import json
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("source")
    ap.add_argument("target")
    ap.add_argument("--passages", type=int, default=400)
    ap.add_argument("--train", type=int, default=48)
    ap.add_argument("--test", type=int, default=32)
    args = ap.parse_args()
    os.makedirs(os.path.join(args.target, "qrels"), exist_ok=True)
    kept = set()
    with open(os.path.join(args.source, "corpus.jsonl"), encoding="utf-8") as src, open(
        os.path.join(args.target, "corpus.jsonl"), "w", encoding="utf-8"
    ) as dst:
        for line in src:
            if len(kept) == args.passages:
                break
            kept.add(str(json.loads(line)["id"]))
            dst.write(line)
    queries = set()
    for split, limit in (("train", args.train), ("test", args.test)):
        by_query = {}
        with open(os.path.join(args.source, "qrels", f"{split}.tsv"), encoding="utf-8") as f:
            next(f)
            for row in f:
                qid, pid, score = row.rstrip("\n").split("\t")
                by_query.setdefault(qid, []).append((pid, score))
        chosen = [q for q, pos in by_query.items() if all(p in kept for p, _ in pos)][:limit]
        with open(os.path.join(args.target, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for q in chosen:
                for pid, score in by_query[q]:
                    f.write(f"{q}\t{pid}\t{score}\n")
        queries.update(chosen)
    with open(os.path.join(args.source, "queries.jsonl"), encoding="utf-8") as src, open(
        os.path.join(args.target, "queries.jsonl"), "w", encoding="utf-8"
    ) as dst:
        for line in src:
            if str(json.loads(line)["id"]) in queries:
                dst.write(line)


if __name__ == "__main__":
    main()
