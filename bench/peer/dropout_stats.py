"""PyTorch's side of `cpack-bench dropout-stats`: the same batch's InfoNCE loss
and gradient norm (before clipping) at the base weights, once with dropout off
and then under --draws dropout draws in training mode. Prints one JSON line.
With --gradients DIR (cpack's DIR from `dropout-stats --gradients`) it also
sums each draw's gradient and its square over the same weights in the same
order, into DIR/torch-sum.f64 and DIR/torch-sumsq.f64."""
import argparse
import json

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=".cache/models/all-MiniLM-L6-v2")
    ap.add_argument("--batch", required=True, help="the BATCH.json cpack-bench dropout-stats wrote")
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--gradients", help="cpack's gradient folder: add this side's sums beside its own")
    ap.add_argument("--hidden-dropout", type=float, help="instead of config.json's hidden_dropout_prob")
    ap.add_argument("--attention-dropout", type=float,
                    help="instead of config.json's attention_probs_dropout_prob")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = json.load(open(args.batch))
    tok = AutoTokenizer.from_pretrained(args.model)
    rates = {k: v for k, v in (("hidden_dropout_prob", args.hidden_dropout),
                               ("attention_probs_dropout_prob", args.attention_dropout)) if v is not None}
    model = AutoModel.from_pretrained(args.model, **rates)
    queries, passages = batch["queries"], batch["passages"]
    group = len(passages) // len(queries)

    def embed(texts, max_len):
        t = tok(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        hidden = model(**t).last_hidden_state
        mask = t["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)

    def score(dropout):
        model.train(dropout)
        model.zero_grad()
        scores = embed(queries, 32) @ embed(passages, 128).T / 0.05
        loss = F.cross_entropy(scores, torch.arange(len(queries)) * group)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item()
        return loss.item(), norm

    plain_loss, plain_norm = score(False)
    tensors = json.load(open(f"{args.gradients}/names.json"))["tensors"] if args.gradients else []
    params = dict(model.named_parameters())
    size = sum(int(torch.tensor(t["shape"]).prod()) for t in tensors)
    total, total_sq = torch.zeros(size, dtype=torch.float64), torch.zeros(size, dtype=torch.float64)
    losses, norms = [], []
    for draw in range(args.draws):
        torch.manual_seed(1000 + draw)
        loss, norm = score(True)
        losses.append(loss)
        norms.append(norm)
        at = 0
        for t in tensors:
            g = params[t["name"]].grad.detach().flatten().double()
            total[at:at + g.numel()] += g
            total_sq[at:at + g.numel()] += g * g
            at += g.numel()
    if args.gradients:
        total.numpy().tofile(f"{args.gradients}/torch-sum.f64")
        total_sq.numpy().tofile(f"{args.gradients}/torch-sumsq.f64")
    out = {"bench": "dropout-stats", "side": f"pytorch {torch.__version__}",
           "hidden_dropout": model.config.hidden_dropout_prob,
           "attention_dropout": model.config.attention_probs_dropout_prob,
           "no_dropout": {"loss": plain_loss, "grad_norm": plain_norm},
           "losses": losses, "grad_norms": norms}
    print(json.dumps(out))
    if args.json:
        json.dump(out, open(args.json, "w"))


if __name__ == "__main__":
    main()
