#!/usr/bin/env python3
"""PyTorch peer of a `cpack rerank train` run: the same recipe on the same
training queries and mined negatives, in plain PyTorch + transformers
(AutoModelForSequenceClassification, num_labels 1).

Reads the run's rerank.json (base model, pair length, recipe) and its
steps.jsonl (the training queries are those of its first epoch), and the
round exported with `cpack mine export --round N --format ids`. Per epoch:
for every query one random positive and group_size - 1 negatives sampled
from its round (repeated when short), seeded shuffle, batches of batch_size;
each group's (query, passage) pairs through the tokenizer (longest_first to
max_len), cross-entropy of the group's logits with the positive as target
(FlagEmbedding's reranker loss); AdamW (no decay on biases and LayerNorm),
linear warm-up then linear decay, gradient clipping, dropout as configured.
Saves each epoch to --save-dir/epoch-N (save_pretrained), for `cpack eval
--reranker` to evaluate both sides with the same code. Prints JSON lines.

With --replay (the run trained from a cross-encoder, so that both sides
start from the same head), it trains instead on exactly the batches cpack
trained on at cpack's learning rate for each step, and prints per step its
loss and gradient norm (before clipping) beside cpack's. Without dropout in
the run the two must agree to rounding (the trace); with dropout each side
draws its own masks, and the replay isolates the implementations from the
sampling: same head, same batches, same rates."""
import argparse
import json
import math
import random
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels(path):
    qrels = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            q, d, s = line.rstrip("\n").split("\t")
            if i == 0 and q == "query-id":
                continue
            if int(s) > 0:
                qrels.setdefault(q, []).append(d)
    return qrels


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run-dir", required=True, help=".cpack/rerankers/<run> of the cpack run to mirror")
    ap.add_argument("--data", required=True, help="the BEIR dataset folder")
    ap.add_argument("--round-ids", help="`cpack mine export --format ids` of the run's round")
    ap.add_argument("--replay", action="store_true", help="train on the run's own batches and rates")
    ap.add_argument("--save-dir")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = json.load(open(f"{args.run_dir}/rerank.json"))
    tr = spec["train"]
    seed = tr["seed"] if args.seed is None else args.seed
    records = read_jsonl(f"{args.run_dir}/steps.jsonl")
    corpus = {d.get("_id", d.get("id")): f"{d.get('title', '')} {d['text']}".strip() if d.get("title") else d["text"]
              for d in read_jsonl(f"{args.data}/corpus.jsonl")}
    queries = {q.get("_id", q.get("id")): q["text"] for q in read_jsonl(f"{args.data}/queries.jsonl")}
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(spec["base_model"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["base_model"], num_labels=1)
    group, batch_size = tr["group_size"], tr["batch_size"]
    no_decay = ["bias", "LayerNorm.weight", "LayerNorm.bias"]
    params = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": tr["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=tr["lr"])
    model.train(tr["dropout"])

    def loss_of(q_ids, p_ids):
        g = len(p_ids) // len(q_ids)
        pairs = tok([queries[q] for q in q_ids for _ in range(g)], [corpus[p] for p in p_ids],
                    truncation="longest_first", max_length=spec["max_len"], padding=True, return_tensors="pt")
        logits = model(**pairs).logits[:, 0].view(len(q_ids), g)
        return F.cross_entropy(logits, torch.zeros(len(q_ids), dtype=torch.long))

    def step(batches, lr):
        losses = []
        for q_ids, p_ids in batches:
            loss = loss_of(q_ids, p_ids)
            (loss / tr["grad_accum"]).backward()
            losses.append(loss.item())
        cap = tr["max_grad_norm"] if tr["max_grad_norm"] > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cap).item()
        for group_ in optimizer.param_groups:
            group_["lr"] = lr
        optimizer.step()
        optimizer.zero_grad()
        return losses, norm

    def save(epoch):
        if args.save_dir:
            out = f"{args.save_dir}/epoch-{epoch}"
            model.save_pretrained(out)
            tok.save_pretrained(out)

    if args.replay:
        worst = {"loss": 0.0, "grad_norm": 0.0}
        for i, r in enumerate(records):
            losses, norm = step([(b["queries"], b["passages"]) for b in r["batches"]], r["lr"])
            theirs = [b["loss"] for b in r["batches"]]
            d_loss = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, theirs))
            d_norm = abs(norm - r["grad_norm"]) / max(abs(r["grad_norm"]), 1e-12)
            worst = {"loss": max(worst["loss"], d_loss), "grad_norm": max(worst["grad_norm"], d_norm)}
            print(json.dumps({"step": r["step"], "lr": r["lr"], "loss": losses, "cpack_loss": theirs,
                              "grad_norm": norm, "cpack_grad_norm": r["grad_norm"],
                              "loss_rel_diff": d_loss, "grad_norm_rel_diff": d_norm}), flush=True)
            if i + 1 == len(records) or records[i + 1]["epoch"] != r["epoch"]:
                save(r["epoch"])
        print(json.dumps({"peer": f"pytorch {torch.__version__}", "steps": len(records), "dropout": tr["dropout"],
                          "max_loss_rel_diff": worst["loss"], "max_grad_norm_rel_diff": worst["grad_norm"]}))
        return

    train_ids = sorted({q for r in records if r["epoch"] == 1 for b in r["batches"] for q in b["queries"]})
    positives = read_qrels(f"{args.data}/qrels/{spec['split']}.tsv")
    negatives = {r["query_id"]: r["neg"] for r in read_jsonl(args.round_ids)}
    steps_per_epoch = math.ceil(math.ceil(len(train_ids) / batch_size) / tr["grad_accum"])
    total = steps_per_epoch * spec["epochs"]
    warmup = math.ceil(tr["warmup_ratio"] * total)
    lr_at = lambda s: tr["lr"] * (s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    done = 0
    for epoch in range(1, spec["epochs"] + 1):
        start = time.perf_counter()
        order = train_ids[:]
        rng.shuffle(order)
        epoch_losses, pending = [], []
        for b in range(0, len(order), batch_size):
            q_ids = order[b:b + batch_size]
            p_ids = []
            for q in q_ids:
                pool = negatives.get(q) or [d for d in corpus if d not in positives[q]]
                picked = rng.sample(pool, group - 1) if len(pool) >= group - 1 else [rng.choice(pool) for _ in range(group - 1)]
                p_ids += [rng.choice(positives[q])] + picked
            pending.append((q_ids, p_ids))
            if len(pending) == tr["grad_accum"] or b + batch_size >= len(order):
                losses, _ = step(pending, lr_at(done))
                epoch_losses += losses
                done += 1
                pending = []
        save(epoch)
        print(json.dumps({"epoch": epoch, "steps": done, "mean_loss": sum(epoch_losses) / max(1, len(epoch_losses)),
                          "train_seconds": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    main()
