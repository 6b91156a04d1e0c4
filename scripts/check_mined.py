#!/usr/bin/env python3
"""Independent check of a mined round, from its exports alone: every negative
is outside the query's positives (over all qrels splits), has a raw rank in
[skip, topk), no query repeats a negative, and the FlagEmbedding export has
exactly FlagEmbedding's keys with matching list lengths."""
import argparse
import collections
import glob
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ids", required=True, help="`cpack mine export --format ids` output")
    ap.add_argument("--flag", required=True, help="`cpack mine export --format flag-embedding` output")
    ap.add_argument("--qrels", required=True, help="the dataset's qrels folder")
    ap.add_argument("--skip", type=int, required=True)
    ap.add_argument("--topk", type=int, required=True)
    args = ap.parse_args()

    positives = collections.defaultdict(set)
    for path in glob.glob(os.path.join(args.qrels, "*.tsv")):
        with open(path, encoding="utf-8") as f:
            next(f)
            for line in f:
                q, d, score = line.rstrip("\n").split("\t")
                if int(score) > 0:
                    positives[q].add(d)

    problems, queries, negatives = [], 0, 0
    with open(args.ids, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            row = json.loads(line)
            queries += 1
            negatives += len(row["neg"])
            if set(row["neg"]) & positives[row["query_id"]]:
                problems.append(f"{args.ids}:{n}: a positive was stored as a negative")
            if len(set(row["neg"])) != len(row["neg"]):
                problems.append(f"{args.ids}:{n}: repeated negative")
            if any(r is None or not args.skip <= r < args.topk for r in row["neg_ranks"]):
                problems.append(f"{args.ids}:{n}: rank outside [{args.skip}, {args.topk})")
    keys = {"query", "pos", "neg", "pos_scores", "neg_scores", "prompt"}
    with open(args.flag, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            row = json.loads(line)
            if set(row) != keys:
                problems.append(f"{args.flag}:{n}: keys {sorted(row)}")
            elif len(row["neg"]) != len(row["neg_scores"]) or len(row["pos"]) != len(row["pos_scores"]):
                problems.append(f"{args.flag}:{n}: scores do not match texts")
    for p in problems[:20]:
        print(p, file=sys.stderr)
    status = "FAILED" if problems else "ok"
    print(f"check_mined: {status}: {queries} queries, {negatives} negatives, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
