#!/usr/bin/env python3
"""Turns bench/stack.sh's per-run JSON files into target/bench/stack.json and
target/bench/stack.md. Ratios are per round (cpack and the peer ran back to
back), then the median over rounds; above 1 means cpack is faster.

  python3 bench/stack_report.py OUT_DIR THREADS ROUNDS SCALE_ROWS FACTORY...
"""
import datetime
import json
import os
import statistics
import subprocess
import sys

out, threads, rounds, scale_rows, factories = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
NOT_INSTALLED = "peer not installed (.cache/bench-venv: bash bench/peer/setup.sh)"


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else None


def per_round(pattern, key):
    return [r[key] for i in range(1, rounds + 1) if (r := load(pattern.format(i)))]


def med(values):
    return statistics.median(values) if values else None


def ratio(cpack, peer, higher_is_better=True):
    pairs = [(a / b if higher_is_better else b / a) for a, b in zip(cpack, peer) if a and b]
    return med(pairs)


def fmt(value, digits=0):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
facts = {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
         "threads": int(threads), "rounds": rounds}
rows, summary = [], {"machine": facts, "jobs": [], "scale": []}


def row(job, unit, cpack, peer, higher_is_better=True, digits=0):
    r = ratio(cpack, peer, higher_is_better) if peer else None
    summary["jobs"].append({"job": job, "unit": unit, "cpack": cpack, "peer": peer, "ratio": r})
    peer_cell = fmt(med(peer), digits) if peer else NOT_INSTALLED
    rows.append(f"| {job} | {unit} | {fmt(med(cpack), digits)} | {peer_cell} | {fmt(r, 2) if r else '—'} |")


for length in (128, 256):
    peer = per_round(f"encode-{length}-pytorch-{{}}.json", "tokens_per_second_median")
    for backend, label in (("candle", "candle f32"), ("ort-f32", "ORT f32"), ("ort-int8", "ORT int8")):
        cpack = per_round(f"encode-{length}-{backend}-{{}}.json", "tokens_per_second_median")
        row(f"encode, length {length}, {label}", "tokens/s", cpack, peer)
        row(f"encode, length {length}, {label}", "docs/s", [c / length for c in cpack], [p / length for p in peer], digits=1)
for f in factories:
    tag = f.replace(",", "_")
    row(f"index build {f} (27,413 × 384)", "s", per_round(f"index-{tag}-cpack-{{}}.json", "build_seconds"),
        per_round(f"index-{tag}-pytorch-{{}}.json", "build_seconds"), higher_is_better=False, digits=2)
    row(f"search {f}, top 200", "queries/s", per_round(f"index-{tag}-cpack-{{}}.json", "search_queries_per_second"),
        per_round(f"index-{tag}-pytorch-{{}}.json", "search_queries_per_second"))
def queries_per_second(backend):
    return [r["train_queries"] / r["mine_seconds"] for i in range(1, rounds + 1)
            if (r := load(f"refresh-{backend}-{i}.json"))]


for backend, label in (("candle", "candle f32"), ("ort-int8", "ORT int8")):
    row(f"mining round: encode 12,889 questions, top 200, skip 10, sample 7, store ({label})", "queries/s",
        queries_per_second(backend), queries_per_second("pytorch"))
mine = [load(f"mine-cpack-{i}.json") for i in range(1, rounds + 1)]
mine = [m for m in mine if m]
if mine:
    floor = med([m["floor_search_seconds"] for m in mine])
    over = med([m["search_select_store_over_floor"] for m in mine])
    beyond = med([m["pipelined_beyond_encoding_over_floor"] for m in mine])
    rows.append(f"| mining: search + select + store, stage by stage, over one plain FAISS search "
                f"(floor {floor:.2f} s) | × | {over:.2f} | | |")
    rows.append(f"| mining: pipelined round's time beyond encoding the queries alone, over the floor | × | "
                f"{beyond:.2f} | | |")
row("training step (16 × 32 + 32 × 128 tokens)", "tokens/s", per_round("train-cpack-{}.json", "tokens_per_second"),
    per_round("train-pytorch-{}.json", "tokens_per_second"))
peer_round = per_round("refresh-pytorch-{}.json", "round_seconds")
for backend, label in (("candle", "candle f32"), ("ort-int8", "ORT int8")):
    row(f"refresh round: encode 27,413 answers + index + mine ({label})", "s",
        per_round(f"refresh-{backend}-{{}}.json", "round_seconds"), peer_round, higher_is_better=False)
peer_ndcg = per_round("refresh-pytorch-{}.json", "ndcg_at_10")
for backend, label in (("candle", "candle f32"), ("ort-int8", "ORT int8")):
    row(f"nDCG@10, InsuranceQA test, passages at 128 tokens ({label})", "",
        per_round(f"refresh-{backend}-{{}}.json", "ndcg_at_10"), peer_ndcg, digits=4)

scale = ["| passages | factory | build s, cpack | build s, faiss-cpu | search q/s, cpack | search q/s, faiss-cpu "
         "| mining select + store s, cpack | peak RSS MiB, cpack | peak RSS MiB, faiss-cpu |",
         "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
for n in scale_rows.split(","):
    for f in factories:
        tag = f.replace(",", "_")
        c, p = load(f"scale-{n}-{tag}-cpack.json"), load(f"scale-{n}-{tag}-pytorch.json")
        if not c:
            continue
        summary["scale"].append({"rows": int(n), "factory": f, "cpack": c, "peer": p})
        pv = (lambda k, d=0: fmt(p[k], d)) if p else (lambda k, d=0: "—")
        scale.append(f"| {int(n):,} | {f} | {fmt(c['build_seconds'], 1)} | {pv('build_seconds', 1)} | "
                     f"{fmt(c['search_queries_per_second'])} | {pv('search_queries_per_second')} | "
                     f"{fmt(c['select_store_seconds'], 2)} | {fmt(c['peak_rss_mib'])} | {pv('peak_rss_mib')} |")

head = (f"{facts['date']} · {cpu} · {facts['cores']} cores · {threads} threads each side · "
        f"{rounds} alternated rounds (medians; ratio = median of per-round ratios, > 1: cpack faster) · "
        f"`bash bench/stack.sh --rounds {rounds}`")
md = [head, "", "| job | unit | cpack | Python stack | ratio |", "|---|---|---:|---:|---:|", *rows, "",
      "Synthetic unit vectors (384 dims; 1,000 queries, top 200):", "", *scale]
json.dump(summary, open(os.path.join(os.path.dirname(out), "stack.json"), "w"), indent=2)
open(os.path.join(os.path.dirname(out), "stack.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
