#!/usr/bin/env python3
"""The Python stack cpack is compared with, job by job (bench/stack.sh runs it
alternated with cpack): sentence-transformers for encoding, faiss-cpu for the
index, and FlagEmbedding hn_mine.py's recipe for mining (search the top 200,
keep ranks 10-210, drop positives, sample 7 at random). Each subcommand prints
one JSON object.

  index    FAISS build + top-200 search of 1,000 queries, on an f32 embedding
           file (cpack's index) or on random unit vectors (--synthetic ROWS)
  refresh  one refresh round at passage length 128: encode the corpus, build a
           flat index, encode the train questions and mine them, then encode
           the test questions and score nDCG@10
"""
import argparse
import json
import math
import os
import random
import resource
import time

import numpy as np

DIM = 384
QUERIES = 1000
TOPK = 200


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit_rows(rows, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def index_job(args):
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if args.synthetic:
        vectors = unit_rows(args.synthetic, 7)
    else:
        vectors = np.fromfile(args.embeddings, dtype=np.float32).reshape(-1, DIM)
    queries = unit_rows(QUERIES, 99) if args.synthetic else vectors[:QUERIES].copy()
    start = time.perf_counter()
    index = faiss.index_factory(DIM, args.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    build = time.perf_counter() - start
    start = time.perf_counter()
    index.search(queries, TOPK)
    search = time.perf_counter() - start
    return {"engine": f"faiss-cpu {faiss.__version__}", "rows": len(vectors), "factory": args.factory,
            "build_seconds": build, "search_seconds": search,
            "search_queries_per_second": QUERIES / search, "peak_rss_mib": peak_rss_mib()}


def load_beir(data):
    def jsonl(name):
        with open(os.path.join(data, name), encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    corpus = jsonl("corpus.jsonl")
    queries = {q.get("_id", q.get("id")): q["text"] for q in jsonl("queries.jsonl")}

    def qrels(split):
        out = {}
        with open(os.path.join(data, "qrels", f"{split}.tsv"), encoding="utf-8") as f:
            next(f)
            for line in f:
                q, d, s = line.rstrip("\n").split("\t")
                out.setdefault(q, {})[d] = int(s)
        return out

    return corpus, queries, qrels


def ndcg_at_10(ranked, relevant):
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def refresh_job(args):
    import faiss
    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    corpus, queries, qrels = load_beir(args.data)
    ids = [d.get("_id", d.get("id")) for d in corpus]
    texts = [f"{d['title']} {d['text']}" if d.get("title") else d["text"] for d in corpus]
    model = SentenceTransformer(args.model, device="cpu")
    timings = {}

    model.max_seq_length = 128
    start = time.perf_counter()
    with torch.inference_mode():
        passages = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    timings["encode_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    index = faiss.IndexFlatIP(passages.shape[1])
    index.add(passages)
    timings["index_seconds"] = time.perf_counter() - start

    # hn_mine.py: encode the questions, search, keep ranks 10-210, drop positives, sample 7.
    model.max_seq_length = 64
    train = qrels("train")
    train_ids = sorted(q for q in train if q in queries)
    start = time.perf_counter()
    with torch.inference_mode():
        qv = model.encode([queries[q] for q in train_ids], batch_size=32, normalize_embeddings=True,
                          convert_to_numpy=True)
    encode_q = time.perf_counter() - start
    start = time.perf_counter()
    _, found = index.search(qv, TOPK + 10)
    search = time.perf_counter() - start
    start = time.perf_counter()
    rng = random.Random(42)
    with open(os.devnull, "w") as out:
        for q, rows in zip(train_ids, found):
            pos = train[q]
            candidates = [ids[r] for r in rows[10:10 + TOPK] if r >= 0 and ids[r] not in pos]
            neg = rng.sample(candidates, min(7, len(candidates)))
            out.write(json.dumps({"query": queries[q], "pos": list(pos), "neg": neg}) + "\n")
    select = time.perf_counter() - start
    timings.update(mine_seconds=encode_q + search + select, mine_encode_seconds=encode_q,
                   mine_search_seconds=search, mine_select_store_seconds=select)

    test = qrels("test")
    test_ids = sorted(q for q in test if q in queries)
    start = time.perf_counter()
    with torch.inference_mode():
        tv = model.encode([queries[q] for q in test_ids], batch_size=32, normalize_embeddings=True,
                          convert_to_numpy=True)
    _, found = index.search(tv, 10)
    ndcg = float(np.mean([ndcg_at_10([ids[r] for r in rows], test[q]) for q, rows in zip(test_ids, found)]))
    timings["eval_seconds"] = time.perf_counter() - start
    return {"engine": f"sentence-transformers + torch {torch.__version__} + faiss-cpu {faiss.__version__}",
            "passages": len(texts), "train_queries": len(train_ids), "test_queries": len(test_ids),
            "ndcg_at_10": ndcg, "round_seconds": timings["encode_seconds"] + timings["index_seconds"]
            + timings["mine_seconds"], **timings, "peak_rss_mib": peak_rss_mib()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="job", required=True)
    ix = sub.add_parser("index")
    ix.add_argument("--factory", required=True)
    ix.add_argument("--embeddings")
    ix.add_argument("--synthetic", type=int)
    ix.add_argument("--threads", type=int, default=0)
    rf = sub.add_parser("refresh")
    rf.add_argument("--data", default=".cache/data/insuranceqa-en")
    rf.add_argument("--model", default=".cache/models/all-MiniLM-L6-v2")
    rf.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(index_job(args) if args.job == "index" else refresh_job(args)))


if __name__ == "__main__":
    main()
