#!/usr/bin/env python3
"""A seeded slice of a BEIR folder for a task of bench/tasks.sh: --train and
--test queries drawn at random from their splits, all their positives, and
random other passages up to --passages (the distractors a retriever must
rank below them). Written to a temporary folder and renamed into place."""
import argparse
import json
import os
import random
import shutil
import tempfile


def read_qrels(path):
    by_query = {}
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            q, d, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                by_query.setdefault(q, []).append(d)
    return by_query


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("source")
    ap.add_argument("target")
    ap.add_argument("--passages", type=int, default=800)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with open(os.path.join(args.source, "corpus.jsonl"), encoding="utf-8") as f:
        corpus = [(str(json.loads(line)["id"]), line) for line in f]
    chosen = {}
    keep = set()
    for split, count in (("train", args.train), ("test", args.test)):
        qrels = read_qrels(os.path.join(args.source, "qrels", split + ".tsv"))
        queries = sorted(qrels)
        rng.shuffle(queries)
        chosen[split] = {q: qrels[q] for q in queries[:count]}
        for docs in chosen[split].values():
            keep.update(docs)
    others = [i for i, _ in corpus if i not in keep]
    rng.shuffle(others)
    keep.update(others[: max(0, args.passages - len(keep))])
    parent = os.path.dirname(os.path.abspath(args.target))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".slice-")
    os.makedirs(os.path.join(tmp, "qrels"))
    with open(os.path.join(tmp, "corpus.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(line for i, line in corpus if i in keep)
    wanted = set(chosen["train"]) | set(chosen["test"])
    with open(os.path.join(args.source, "queries.jsonl"), encoding="utf-8") as src, open(
        os.path.join(tmp, "queries.jsonl"), "w", encoding="utf-8"
    ) as dst:
        dst.writelines(line for line in src if str(json.loads(line)["id"]) in wanted)
    for split, judged in chosen.items():
        with open(os.path.join(tmp, "qrels", split + ".tsv"), "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for q in sorted(judged):
                for d in judged[q]:
                    f.write(f"{q}\t{d}\t1\n")
    if os.path.exists(args.target):
        shutil.rmtree(args.target)
    os.rename(tmp, args.target)
    print(f"{args.target}: {len(keep)} passages, {len(chosen['train'])} train and {len(chosen['test'])} test queries")


if __name__ == "__main__":
    main()
