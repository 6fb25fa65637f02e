#!/usr/bin/python3
"""PyTorch's DataLoader doing the JPEG benchmark's work, the peer for Kiln.Data.Benchmarks.

WebDataset tar shards -> PIL decode -> torchvision RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor +
Normalize(ImageNet) -> batches of 64 float tensors [64, 3, 224, 224], on --workers processes (an
IterableDataset that gives each worker every n-th shard, as WebDataset does). Epochs repeat until --seconds
have passed; the rate counts images after the first --warmup batches and one second (start-up excluded).
Prints one line: `pytorch-dataloader workers=N images=... seconds=... images/s=... images/s/core=...`.

Runs with Debian's python3-torch, python3-torchvision and python3-pil (/usr/bin/python3) and with a pip
PyTorch (torch 2.11 + torchvision 0.26).
"""

import argparse
import glob
import io
import os
import tarfile
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


class TarShards(IterableDataset):
    """Samples (NNNNNN.jpg + NNNNNN.cls) of WebDataset shards; worker w of n reads shards w, w+n, ..."""

    def __init__(self, shards, transform):
        super().__init__()
        self.shards = shards
        self.transform = transform

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for shard in self.shards[worker::workers]:
            with tarfile.open(shard, "r|") as tar:
                key, image, label = None, None, None
                for member in tar:
                    if not member.isfile():
                        continue
                    stem, ext = member.name.split(".", 1)
                    data = tar.extractfile(member).read()
                    if stem != key:
                        key, image, label = stem, None, None
                    if ext == "jpg":
                        image = data
                    elif ext == "cls":
                        label = int(data)
                    if image is not None and label is not None:
                        with Image.open(io.BytesIO(image)) as img:
                            rgb = img.convert("RGB")
                        yield self.transform(rgb), label
                        key, image, label = None, None, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="folder of shard-*.tar")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader worker processes (default: all cores)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="measure at least this long (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="batches not counted at the start (default 2)")
    args = parser.parse_args()

    shards = sorted(glob.glob(os.path.join(args.corpus, "*.tar")))
    if not shards:
        raise SystemExit(f"pytorch_loader.py: no *.tar under {args.corpus}: run benchmarks/data/make-corpus.sh")
    if len(shards) < args.workers:
        print(f"warning: {len(shards)} shards for {args.workers} workers: some workers idle; cut more shards")

    transform = transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    dataset = TarShards(shards, transform)
    loader = DataLoader(dataset, batch_size=args.batch, num_workers=args.workers,
                        persistent_workers=args.workers > 0, prefetch_factor=2 if args.workers > 0 else None)

    counted, batches, start = 0, 0, None
    deadline = None
    epoch = 0
    began = time.perf_counter()
    while True:
        for images, labels in loader:
            assert images.shape[1:] == (3, 224, 224) and images.dtype == torch.float32
            batches += 1
            # Counting starts after the warm-up batches and at least a second (workers started).
            if start is None and batches >= args.warmup and time.perf_counter() - began >= 1.0:
                start = time.perf_counter()
                deadline = start + args.seconds
            elif start is not None:
                counted += images.shape[0]
        epoch += 1
        if deadline is not None and time.perf_counter() >= deadline:
            break
        if epoch >= 1000:
            break
    elapsed = time.perf_counter() - start
    cores = max(1, args.workers)
    rate = counted / elapsed
    print(f"pytorch-dataloader workers={args.workers} torch={torch.__version__} images={counted} "
          f"seconds={elapsed:.2f} images/s={rate:.1f} images/s/core={rate / cores:.1f}")


if __name__ == "__main__":
    main()
