"""Kiln's int8 all-MiniLM-L6-v2 against onnxruntime.quantization.quantize_dynamic's, both run by this Python's ONNX Runtime.

usage: python3 ort_minilm_compare.py DIR [--threads 1] [--rounds 3]
DIR holds minilm.onnx (float32), minilm-kiln-int8.onnx (Kiln's `--quantize int8` output) and tokens.json (token ids of
real sentences, written by Kiln.Optimize.Benchmarks --export DIR). quantize_dynamic runs here, on this machine, with its
defaults (per tensor, QInt8 weights) and once more with per_channel=True. Every model runs batch 1 over every sentence,
the models alternating per sentence; embeddings are mean-pooled token states, compared to float32's by cosine.
Prints one JSON line per model.
"""
import argparse
import json
import os
import platform
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", action="store_true", help="also print each model's operator counts after ONNX Runtime's own optimizations")
    a = parser.parse_args()
    fp32 = os.path.join(a.dir, "minilm.onnx")
    models = {"fp32": fp32, "kiln_int8": os.path.join(a.dir, "minilm-kiln-int8.onnx")}
    for extra in sorted(f for f in os.listdir(a.dir) if f.startswith("minilm-kiln-int8-") and f.endswith(".onnx") and ".ort-optimized" not in f):
        models["kiln_int8_" + extra[len("minilm-kiln-int8-"):-len(".onnx")].replace("-", "_")] = os.path.join(a.dir, extra)
    for name, per_channel in (("ort_int8", False), ("ort_int8_per_channel", True)):
        path = os.path.join(a.dir, f"minilm-{name}.onnx")
        start = time.perf_counter()
        quantize_dynamic(fp32, path, weight_type=QuantType.QInt8, per_channel=per_channel)
        print(json.dumps({"quantized": name, "seconds": round(time.perf_counter() - start, 2)}), flush=True)
        models[name] = path
    sentences = json.load(open(os.path.join(a.dir, "tokens.json")))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = a.threads
    options.inter_op_num_threads = 1
    sessions = {n: ort.InferenceSession(p, options, providers=["CPUExecutionProvider"]) for n, p in models.items()}
    if a.ops:
        import collections
        import onnx
        for n, p in models.items():
            saved = ort.SessionOptions()
            saved.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            saved.optimized_model_filepath = p + ".ort-optimized.onnx"
            ort.InferenceSession(p, saved, providers=["CPUExecutionProvider"])
            graph = onnx.load(saved.optimized_model_filepath, load_external_data=False).graph
            counts = collections.Counter(node.op_type for node in graph.node)
            print(json.dumps({"model": n, "nodes": len(graph.node), "ops": dict(counts.most_common())}), flush=True)
    feeds = [{"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
              "token_type_ids": np.zeros((1, len(ids)), dtype=np.int64)} for ids in sentences]
    times = {n: [] for n in sessions}
    embeddings = {n: [] for n in sessions}
    names = list(sessions)
    for round_ in range(a.rounds):
        for i, feed in enumerate(feeds):
            shift = (i + round_) % len(names)  # rotate the order so no model always runs first
            for n in names[shift:] + names[:shift]:
                start = time.perf_counter()
                hidden = sessions[n].run(None, feed)[0]
                times[n].append((time.perf_counter() - start) * 1000)
                if round_ == 0:
                    embeddings[n].append(hidden[0].mean(axis=0))
    reference = embeddings["fp32"]
    base = float(np.median(times["fp32"]))
    for n in names:
        cos = [float(np.dot(e, r) / (np.linalg.norm(e) * np.linalg.norm(r))) for e, r in zip(embeddings[n], reference)]
        p50 = float(np.median(times[n]))
        print(json.dumps({"model": n, "onnxruntime": ort.__version__, "cpu": platform.processor() or platform.machine(),
                          "threads": a.threads, "sentences": len(feeds), "runs": len(times[n]),
                          "p50_ms": round(p50, 3), "p99_ms": round(float(np.percentile(times[n], 99)), 3),
                          "speedup_vs_fp32": round(base / p50, 3), "bytes": os.path.getsize(models[n]),
                          "cosine_mean": round(float(np.mean(cos)), 5), "cosine_min": round(float(np.min(cos)), 5)}), flush=True)


if __name__ == "__main__":
    main()
