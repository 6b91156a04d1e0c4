#!/usr/bin/env python3
"""Summarises bench/encode_real.sh's runs: passages/s per encoder and length
(median of rounds) and the ratios to sentence-transformers in f32 and under
PyTorch's bf16 autocast (medians of per-round ratios of real tokens/s), as
JSON and a Markdown table, with the kernels each side ran."""
import datetime
import json
import os
import statistics
import sys

ENCODERS = [
    ("candle f32 (default)", "candle-f32"),
    ("candle bf16 products", "candle-bf16"),
    ("ONNX Runtime f32", "ort-f32"),
    ("ONNX Runtime int8", "ort-int8"),
    ("sentence-transformers (PyTorch)", "pytorch"),
    ("sentence-transformers under bf16 autocast", "pytorch-bf16"),
]
PEERS = ("pytorch", "pytorch-bf16")


def main():
    out, rounds, stem = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def load(name):
        path = os.path.join(out, name)
        return json.load(open(path)) if os.path.exists(path) else None

    first = load("candle-f32-128-1.json") or {}
    machine = first.get("machine", {})
    summary = {
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "threads": first.get("threads"),
        "passages": first.get("texts"),
        "rounds": rounds,
        "results": {},
    }
    lines = [
        f"Real-corpus encode: {first.get('texts')} InsuranceQA answers at their real lengths, "
        f"as `cpack index build` encodes them; {first.get('threads')} threads, {rounds} alternated "
        f"rounds; {machine.get('cpu', '?')}, cpack matmul kernel {machine.get('matmul_kernel', '?')}, "
        f"bf16 products on {machine.get('bf16_kernel', '?')}, "
        f"system OpenBLAS core {machine.get('system_blas_core')}; {summary['date']}.",
        "",
        "| encoder | max length | real tokens | passages/s (median) | tokens/s (median) "
        "| × sentence-transformers | × PyTorch bf16 autocast |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for length in (128, 256):
        runs = {
            key: [r for i in range(1, rounds + 1) if (r := load(f"{key}-{length}-{i}.json"))]
            for _, key in ENCODERS
        }
        for label, key in ENCODERS:
            r = runs[key]
            if not r:
                lines.append(f"| {label} | {length} | | not run | | | |")
                continue
            pps = statistics.median(x["passages_per_second_median"] for x in r)
            tps = statistics.median(x["tokens_per_second_median"] for x in r)
            entry = {"passages_per_second": pps, "tokens_per_second": tps,
                     "per_round_tokens_per_second": [x["tokens_per_second_median"] for x in r]}
            if key.startswith("pytorch"):
                entry["cpu_capability"] = r[0].get("cpu_capability")
                entry["onednn_kernels"] = r[0].get("onednn_kernels")
            ratio_cells = []
            for peer_key in PEERS:
                peer = runs[peer_key]
                if not peer or key == peer_key:
                    ratio_cells.append("")
                    continue
                ratios = [a["tokens_per_second_median"] / b["tokens_per_second_median"]
                          for a, b in zip(r, peer)]
                entry[f"ratio_to_{peer_key}"] = round(statistics.median(ratios), 3)
                entry[f"per_round_ratios_to_{peer_key}"] = [round(x, 3) for x in ratios]
                ratio_cells.append(f"{statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})")
            summary["results"][f"{key}-{length}"] = entry
            lines.append(f"| {label} | {length} | {r[0]['real_tokens']:,} | {pps:.1f} | {tps:,.0f} | "
                         + " | ".join(ratio_cells) + " |")
    for key in PEERS:
        run = load(f"{key}-128-1.json")
        if run:
            lines.append(f"\n{key}: PyTorch CPU capability {run.get('cpu_capability')}, "
                         f"oneDNN primitives of one batch: {', '.join(run.get('onednn_kernels') or ['?'])}")
    with open(stem + ".json", "w") as f:
        json.dump(summary, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
