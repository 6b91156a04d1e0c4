#!/usr/bin/env python3
"""Summarises bench/encode_real.sh's runs: passages/s per encoder and length
(median of rounds) and the ratio to sentence-transformers (median of
per-round ratios), as JSON and a Markdown table."""
import datetime
import json
import os
import statistics
import sys

ENCODERS = [
    ("candle f32 (default)", "candle-f32"),
    ("ONNX Runtime f32", "ort-f32"),
    ("ONNX Runtime int8", "ort-int8"),
    ("sentence-transformers (PyTorch)", "pytorch"),
]


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
        f"system OpenBLAS core {machine.get('system_blas_core')}; {summary['date']}.",
        "",
        "| encoder | max length | real tokens | passages/s (median) | tokens/s (median) | × sentence-transformers |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for length in (128, 256):
        runs = {
            key: [r for i in range(1, rounds + 1) if (r := load(f"{key}-{length}-{i}.json"))]
            for _, key in ENCODERS
        }
        peer = runs["pytorch"]
        for label, key in ENCODERS:
            r = runs[key]
            if not r:
                lines.append(f"| {label} | {length} | | peer not installed | | |")
                continue
            pps = statistics.median(x["passages_per_second_median"] for x in r)
            tps = statistics.median(x["tokens_per_second_median"] for x in r)
            entry = {"passages_per_second": pps, "tokens_per_second": tps,
                     "per_round_passages_per_second": [x["passages_per_second_median"] for x in r]}
            ratio = ""
            if peer and key != "pytorch":
                ratios = [a["passages_per_second_median"] / b["passages_per_second_median"]
                          for a, b in zip(r, peer)]
                entry["ratio_to_peer"] = round(statistics.median(ratios), 3)
                entry["per_round_ratios"] = [round(x, 3) for x in ratios]
                ratio = f"{entry['ratio_to_peer']:.2f} ({', '.join(f'{x:.2f}' for x in ratios)})"
            summary["results"][f"{key}-{length}"] = entry
            lines.append(f"| {label} | {length} | {r[0]['real_tokens']:,} | {pps:.1f} | {tps:,.0f} | {ratio} |")
    with open(stem + ".json", "w") as f:
        json.dump(summary, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
