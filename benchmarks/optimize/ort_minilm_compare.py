"""Kiln's int8 all-MiniLM-L6-v2 against onnxruntime.quantization.quantize_dynamic's, both run by this Python's ONNX Runtime.

usage: python3 ort_minilm_compare.py DIR [--threads 1] [--rounds 3]
DIR holds minilm.onnx (float32), minilm-kiln-int8.onnx (Kiln's `--quantize int8` output) and tokens.json (token ids of
real sentences, written by Kiln.Optimize.Benchmarks --export DIR). quantize_dynamic runs here, on this machine, with its
defaults (per tensor, QInt8 weights), once more with per_channel=True, and once more per channel after ORT's transformer
optimizer (onnxruntime.transformers.optimizer, model_type bert). Every model runs batch 1 over every sentence,
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
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads; 0 is ONNX Runtime's default (one per physical core)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", action="store_true", help="also print each model's operator counts after ONNX Runtime's own optimizations")
    parser.add_argument("--variants", action="store_true", help="also time variants that isolate how Kiln's and quantize_dynamic's files differ (variants())")
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
    # A stronger peer than the issue asks for: ORT's own transformer optimizer (its Python route for BERT models: fused
    # Attention, SkipLayerNormalization, ...) first, then quantize_dynamic per channel, which makes its Attention QAttention.
    try:
        from onnxruntime.transformers import optimizer
        start = time.perf_counter()
        fused = optimizer.optimize_model(fp32, model_type="bert", num_heads=12, hidden_size=384)
        fused_path = os.path.join(a.dir, "minilm-ort-optimized.onnx")
        fused.save_model_to_file(fused_path)
        path = os.path.join(a.dir, "minilm-ort_opt_int8_per_channel.onnx")
        import onnx
        # Its contrib ops defeat quantize_dynamic's shape inference; ORT's message asks for this option.
        quantize_dynamic(fused_path, path, weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        print(json.dumps({"quantized": "ort_opt_int8_per_channel", "fused_ops": fused.get_fused_operator_statistics(),
                          "seconds": round(time.perf_counter() - start, 2)}), flush=True)
        models["ort_opt_int8_per_channel"] = path
    except Exception as e:  # noqa: BLE001 - the comparison above stands without it
        print(json.dumps({"quantized": "ort_opt_int8_per_channel", "error": repr(e)}), flush=True)
    if a.variants:
        models.update(variants(a.dir, models["kiln_int8"], models["ort_int8_per_channel"]))
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


def variants(directory, kiln_path, ort_path):
    """Files that differ from Kiln's or quantize_dynamic's per-channel model in one respect each: Kiln's re-saved by
    the onnx package; Kiln's with the value_info of ORT's file (for the tensors both have) or of onnx's own shape
    inference; ORT's without its value_info; ORT's without the weights' zero points (Kiln writes none for symmetric
    weights)."""
    import onnx
    import onnx.shape_inference
    out = {}

    def save(model, name):
        path = os.path.join(directory, f"variant-{name}.onnx")
        onnx.save(model, path)
        out[name] = path

    kiln = onnx.load(kiln_path)
    save(kiln, "kiln_resaved")
    ort_model = onnx.load(ort_path)
    names = {o for n in kiln.graph.node for o in n.output}
    with_ort_vi = onnx.load(kiln_path)
    with_ort_vi.graph.value_info.extend(v for v in ort_model.graph.value_info if v.name in names)
    print(json.dumps({"variant": "kiln_ort_value_info", "copied": len(with_ort_vi.graph.value_info), "of": len(ort_model.graph.value_info)}), flush=True)
    save(with_ort_vi, "kiln_ort_value_info")
    save(onnx.shape_inference.infer_shapes(onnx.load(kiln_path)), "kiln_onnx_value_info")
    no_vi = onnx.load(ort_path)
    del no_vi.graph.value_info[:]
    save(no_vi, "ort_pc_no_value_info")
    no_zp = onnx.load(ort_path)
    initializers = {i.name for i in no_zp.graph.initializer}
    dropped = 0
    for node in no_zp.graph.node:
        if node.op_type == "MatMulInteger" and len(node.input) == 4 and node.input[3] in initializers:
            del node.input[3]
            dropped += 1
    print(json.dumps({"variant": "ort_pc_no_weight_zero_point", "dropped": dropped}), flush=True)
    save(no_zp, "ort_pc_no_weight_zero_point")
    return out


if __name__ == "__main__":
    main()
