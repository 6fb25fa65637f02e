#!/usr/bin/env python3
"""Writes the tiny TorchScript fixtures of TorchScriptTests (run once; the .pt files are committed).

    /usr/bin/python3 tests/Kiln.Serve.Tests/Fixtures/make_torchscript.py

Every weight is defined by a formula, so the tests compute the same arithmetic in C#:

* linear.pt       Y[N,3] = X[N,4] @ W + B, W[i,o] = (i*3 + o - 5) / 7, B = [0.5, -1, 2] (TinyOnnx.cs, scale 1).
* two_outputs.pt  (X @ W + B, 2 * X): a tuple of two tensors.
* embedder.pt     [N,3,H,W] -> [N,4]: a 1x1 convolution (M[k,c] = (k - c) / 4, bias b[k] = k / 10) and a global
                  average pool, i.e. out[n,k] = sum_c M[k,c] * mean(x[n,c]) + b[k].
* state_dict.pt   torch.save of linear's state_dict: a PyTorch pickle archive that is not TorchScript.

The tests never run Python (CI machines may have no PyTorch); this script only documents how the files were made.
"""
import os

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        w = torch.tensor([(i - 5) / 7.0 for i in range(12)], dtype=torch.float32).reshape(4, 3)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.matmul(self.weight) + self.bias


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = Linear()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), x * 2.0


class Embedder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=1)
        with torch.no_grad():
            m = torch.tensor([[(k - c) / 4.0 for c in range(3)] for k in range(4)], dtype=torch.float32)
            self.conv.weight.copy_(m.reshape(4, 3, 1, 1))
            self.conv.bias.copy_(torch.tensor([k / 10.0 for k in range(4)], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def save(module: nn.Module, name: str) -> None:
    scripted = torch.jit.script(module.eval())
    path = os.path.join(HERE, name)
    torch.jit.save(scripted, path)
    print(f"{name}: {os.path.getsize(path)} bytes")


def main() -> None:
    torch.manual_seed(0)
    save(Linear(), "linear.pt")
    save(TwoOutputs(), "two_outputs.pt")
    save(Embedder(), "embedder.pt")
    path = os.path.join(HERE, "state_dict.pt")
    torch.save(Linear().state_dict(), path)
    print(f"state_dict.pt: {os.path.getsize(path)} bytes")
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    print("linear([1,-2,0.5,3]) =", torch.jit.load(os.path.join(HERE, "linear.pt"))(x).tolist())


if __name__ == "__main__":
    main()
