"""PyTorch's side of the transformer LM comparison: the model (the tiny-lm sample's layers and shapes), data, batch,
dtype and optimizer of Kiln.Distributed.Benchmarks' lm mode, trained with torch.nn.parallel.DistributedDataParallel (a world of 1 trains alone).

One process per GPU: torchrun --standalone --nproc-per-node 2 torch_tiny_gpt.py [--layers 6 --d-model 512 ...]
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attention = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attention.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class TinyGpt(nn.Module):
    def __init__(self, vocab: int, sequence: int, d_model: int, heads: int, layers: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(sequence, d_model)
        self.blocks = nn.ModuleList([Block(d_model, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    for name, default in [("layers", 6), ("d-model", 512), ("heads", 8), ("seq", 256), ("batch", 32), ("steps", 60), ("warmup", 10)]:
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--foreach", default="default", choices=["default", "false"],
                        help="false: AdamW updates one parameter at a time, as TorchSharp's AdamW does")
    a = parser.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl", device_id=device)

    text = open(a.text, encoding="utf-8").read().encode("utf-8")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long, device=device)

    torch.manual_seed(1234)
    dtype = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
    model = TinyGpt(len(vocab), a.seq, a.d_model, a.heads, a.layers).to(dtype).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    trained = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank]) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, foreach=False if a.foreach == "false" else None)
    torch.manual_seed(42 + rank)  # each rank draws its own batches
    offsets = torch.arange(a.seq, device=device).unsqueeze(0)

    loss = None
    start = 0.0
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            torch.cuda.synchronize(device)
            start = time.perf_counter()
        starts = torch.randint(0, data.shape[0] - a.seq - 1, (a.batch, 1), device=device)
        positions = starts + offsets
        x, y = data[positions], data[positions + 1]
        optimizer.zero_grad()
        logits = trained(x)
        loss = F.cross_entropy(logits.view(-1, len(vocab)).float(), y.view(-1))
        loss.backward()
        optimizer.step()
    final = loss.item()
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if rank == 0:
        print(json.dumps({"impl": "torch", "world": world, "params": parameters, "layers": a.layers, "d_model": a.d_model, "seq": a.seq,
                          "batch_per_rank": a.batch, "dtype": a.dtype, "foreach": a.foreach, "steps": a.steps, "steps_per_s": round(a.steps / seconds, 2),
                          "tokens_per_s": round(a.steps * a.batch * a.seq * world / seconds), "final_loss": round(final, 4)}), flush=True)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
