#!/usr/bin/env python3
"""PyTorch peer of a `cpack train` run: the same recipe on the same training
queries and the same mined negatives, in plain PyTorch + transformers.

Reads the run's run.json (recipe, lengths, instruction) and queries.json
(training query ids), and a round exported with
`cpack mine export --round N --format ids` (static negatives, or none with
group size 1). Per epoch: for every query one random positive and
group_size - 1 negatives sampled from its round (repeated when short), seeded
shuffle, batches of batch_size; InfoNCE over all passages of the batch at the
run's temperature; AdamW (no decay on biases and LayerNorm), linear warm-up
then linear decay, gradient clipping, dropout as configured. After each epoch
the corpus and the test queries are encoded and nDCG@10 computed by exact
inner-product search (or, with --save-dir and --no-eval, each epoch's model
is saved for another evaluator: bench/train_seeds.sh evaluates both sides
with `cpack eval`). Prints one JSON line per epoch and a summary.

With --replay STEPS (a run's steps.jsonl), it trains instead on exactly the
batches cpack trained on, at cpack's learning rate for each step, and prints
per step its own loss and gradient norm (before clipping) beside cpack's,
with their relative differences: the step-by-step check of cpack's
training (run with dropout off, `cpack train --no-dropout`)."""
import argparse
import json
import math
import os
import random
import shutil
import time

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer


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
            qrels.setdefault(q, {})[d] = int(s)
    return qrels


def ndcg_at_10(ranking, rel):
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:10]) if rel.get(d, 0) > 0)
    ideal = sorted((r for r in rel.values() if r > 0), reverse=True)[:10]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run-dir", required=True, help=".cpack/runs/<run> of the cpack run to mirror")
    ap.add_argument("--data", required=True, help="the BEIR dataset folder")
    ap.add_argument("--round-ids", help="`cpack mine export --format ids` of the round to train on")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--eval-split", default="test")
    ap.add_argument("--seed", type=int, help="override the run's seed (to see run-to-run variance)")
    ap.add_argument("--replay", help="a run's steps.jsonl: train on exactly its batches and rates")
    ap.add_argument("--replay-with-dropout", action="store_true",
                    help="replay a run trained with dropout on, PyTorch drawing its own masks: the batches "
                         "are the same, so what differs is the dropout (per-step figures are not compared)")
    ap.add_argument("--save-dir", help="write each epoch's model as DIR/epoch-N (a Hugging Face folder)")
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation (to evaluate the saved epochs elsewhere)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = json.load(open(f"{args.run_dir}/run.json"))
    query_ids = json.load(open(f"{args.run_dir}/queries.json"))
    enc, tr = spec["encoder"], spec["train"]
    if args.seed is not None:
        tr["seed"] = args.seed
    model_dir = spec["base_model"]
    corpus = read_jsonl(f"{args.data}/corpus.jsonl")
    doc_ids = [d.get("_id", d.get("id")) for d in corpus]
    doc_text = {i: f"{d.get('title', '')} {d['text']}" for i, d in zip(doc_ids, corpus)}
    queries = {q.get("_id", q.get("id")): q["text"] for q in read_jsonl(f"{args.data}/queries.jsonl")}
    train_qrels = read_qrels(f"{args.data}/qrels/{spec['mining']['split']}.tsv")
    eval_qrels = read_qrels(f"{args.data}/qrels/{args.eval_split}.tsv")
    negatives = {}
    if args.round_ids:
        negatives = {r["query_id"]: r["neg"] for r in read_jsonl(args.round_ids)}

    torch.manual_seed(tr["seed"])
    rng = random.Random(tr["seed"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir)
    instruction = enc["query_instruction"]
    group, batch_size, temperature = tr["group_size"], tr["batch_size"], tr["temperature"]

    def embed(texts, max_len):
        batch = tok(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if enc["normalize"] else pooled

    no_decay = ["bias", "LayerNorm.weight", "LayerNorm.bias"]
    params = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": tr["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=tr["lr"])
    steps_per_epoch = math.ceil(len(query_ids) / batch_size)
    total = steps_per_epoch * spec["epochs"]
    warmup = math.ceil(tr["warmup_ratio"] * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )

    def evaluate():
        model.eval()
        ids = list(eval_qrels)
        with torch.inference_mode():
            order = sorted(range(len(doc_ids)), key=lambda i: len(doc_text[doc_ids[i]]))
            vecs = torch.zeros(len(doc_ids), model.config.hidden_size)
            for s in range(0, len(order), 64):
                rows = order[s : s + 64]
                vecs[rows] = embed([doc_text[doc_ids[i]] for i in rows], enc["passage_max_len"])
            qv = torch.cat([embed([instruction + queries[q] for q in ids[s : s + 64]], enc["query_max_len"]) for s in range(0, len(ids), 64)])
            top = (qv @ vecs.T).topk(10, dim=1).indices
        model.train(tr["dropout"])
        return sum(ndcg_at_10([doc_ids[i] for i in top[k].tolist()], eval_qrels[q]) for k, q in enumerate(ids)) / len(ids)

    def save(out):
        """The model as a sentence-transformers folder: weights, tokenizer, and the base's module files."""
        model.save_pretrained(out)
        tok.save_pretrained(out)
        for extra in ["modules.json", "sentence_bert_config.json", "1_Pooling"]:
            src = os.path.join(model_dir, extra)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(out, extra), dirs_exist_ok=True)
            elif os.path.exists(src):
                shutil.copy(src, out)

    def step(batches, lr):
        """One optimizer step over `batches` [(query ids, passage ids)]; returns losses and the norm before clipping."""
        losses = []
        for q_ids, p_ids in batches:
            g = len(p_ids) // len(q_ids)
            q = embed([instruction + queries[i] for i in q_ids], enc["query_max_len"])
            p = embed([doc_text[i] for i in p_ids], enc["passage_max_len"])
            loss = F.cross_entropy(q @ p.T / temperature, torch.arange(len(q_ids)) * g)
            (loss / tr["grad_accum"]).backward()
            losses.append(loss.item())
        cap = tr["max_grad_norm"] if tr["max_grad_norm"] > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cap).item()
        for group_ in optimizer.param_groups:
            group_["lr"] = lr
        optimizer.step()
        optimizer.zero_grad()
        return losses, norm

    results = []
    model.train(tr["dropout"])
    if args.replay:
        if tr["dropout"] and not args.replay_with_dropout:
            raise SystemExit("replay needs a run trained with dropout off (cpack train --no-dropout), "
                             "or --replay-with-dropout")
        if tr["loss"] != "infonce":
            raise SystemExit(f"the replay implements InfoNCE only, the run used {tr['loss']}")
        records = read_jsonl(args.replay)
        worst = {"loss": 0.0, "grad_norm": 0.0}
        for epoch in range(1, spec["epochs"] + 1):
            start = time.perf_counter()
            mine = [r for r in records if r["epoch"] == epoch]
            epoch_losses = []
            for r in mine:
                losses, norm = step([(b["queries"], b["passages"]) for b in r["batches"]], r["lr"])
                epoch_losses.extend(losses)
                theirs = [b["loss"] for b in r["batches"]]
                d_loss = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, theirs))
                d_norm = abs(norm - r["grad_norm"]) / max(abs(r["grad_norm"]), 1e-12)
                worst["loss"], worst["grad_norm"] = max(worst["loss"], d_loss), max(worst["grad_norm"], d_norm)
                print(json.dumps({"epoch": epoch, "step": r["step"], "lr": r["lr"],
                                  "loss": losses, "cpack_loss": theirs, "loss_rel_diff": d_loss,
                                  "grad_norm": norm, "cpack_grad_norm": r["grad_norm"],
                                  "grad_norm_rel_diff": d_norm}), flush=True)
            row = {"epoch": epoch, "steps": len(mine),
                   "mean_loss": sum(epoch_losses) / max(1, len(epoch_losses)),
                   "cpack_mean_loss": sum(b["loss"] for r in mine for b in r["batches"])
                   / max(1, sum(len(r["batches"]) for r in mine)),
                   "train_seconds": time.perf_counter() - start,
                   "ndcg_at_10": None if args.no_eval else evaluate()}
            if args.save_dir:
                save(f"{args.save_dir}/epoch-{epoch}")
            print(json.dumps(row), flush=True)
            results.append(row)
        summary = {"peer": f"pytorch {torch.__version__}", "run": spec["name"], "replay": args.replay,
                   "max_loss_rel_diff": worst["loss"], "max_grad_norm_rel_diff": worst["grad_norm"],
                   "epochs": results}
        print(json.dumps(summary))
        if args.json:
            json.dump(summary, open(args.json, "w"))
        return
    for epoch in range(1, spec["epochs"] + 1):
        start = time.perf_counter()
        order = query_ids[:]
        rng.shuffle(order)
        losses = []
        for s in range(0, len(order), batch_size):
            batch = order[s : s + batch_size]
            q_texts, p_texts = [], []
            for q in batch:
                pos = [d for d, score in train_qrels[q].items() if score > 0]
                p_texts.append(doc_text[rng.choice(pos)])
                negs = negatives.get(q, [])
                if group > 1:
                    pool = (negs * math.ceil((group - 1) / max(1, len(negs)))) if negs else rng.sample(doc_ids, group - 1)
                    p_texts.extend(doc_text[d] for d in rng.sample(pool, group - 1))
                q_texts.append(instruction + queries[q])
            scores = embed(q_texts, enc["query_max_len"]) @ embed(p_texts, enc["passage_max_len"]).T / temperature
            loss = F.cross_entropy(scores, torch.arange(len(batch)) * group)
            optimizer.zero_grad()
            loss.backward()
            if tr["max_grad_norm"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tr["max_grad_norm"])
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        train_seconds = time.perf_counter() - start
        if args.save_dir:
            save(f"{args.save_dir}/epoch-{epoch}")
        ndcg = None if args.no_eval else evaluate()
        row = {"epoch": epoch, "mean_loss": sum(losses) / len(losses), "train_seconds": train_seconds, "ndcg_at_10": ndcg}
        print(json.dumps(row), flush=True)
        results.append(row)
    summary = {"peer": f"pytorch {torch.__version__}", "run": spec["name"], "epochs": results}
    print(json.dumps(summary))
    if args.json:
        json.dump(summary, open(args.json, "w"))


if __name__ == "__main__":
    main()
