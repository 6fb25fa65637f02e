#!/usr/bin/python3
"""Cut an ImageNet-like JPEG corpus out of the photographs Debian ships, into WebDataset tar shards.

Each sample is a crop of one source photograph (a random window covering 50-100% of its shorter side),
downscaled with a Lanczos filter to an ImageNet-like size (mostly 500x375, 375x500, 500x333, 333x500,
500x500; 1 in 5 with a long side of 300-800), and saved as a baseline JPEG at quality 90 with 4:2:0
chroma subsampling. Shards hold `NNNNNN.jpg` plus `NNNNNN.cls` (the source photograph's index as text).
Same seed, sources, count and shard size, same Pillow -> byte-identical shards (each shard draws from its
own generator seeded with (seed, shard), so shards can be cut in parallel; tar headers carry mtime 0).

Run through make-corpus.sh, which installs the source packages first. `--sources DIR` takes the photographs
from a flat folder instead (as `--export-sources DIR` writes them), for hosts without those packages.
"""

import argparse
import io
import multiprocessing
import os
import shutil
import random
import sys
import tarfile

from PIL import Image

# Photographs only (renders, paintings and vector art are left out): Debian's mate-backgrounds "nature"
# set and the photographic wallpapers of plasma-workspace-wallpapers.
MATE = "/usr/share/backgrounds/mate/nature"
PLASMA = "/usr/share/wallpapers"
SOURCES = [os.path.join(MATE, n + ".jpg") for n in (
    "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
    "Storm", "TwoWings", "Wood", "YellowFlower")] + [
    os.path.join(PLASMA, n, "contents/images/2560x1600.jpg") for n in (
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
        "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")]

# (width, height, weight): ImageNet's common shapes.
SHAPES = [(500, 375, 40), (375, 500, 12), (500, 333, 14), (333, 500, 6), (500, 500, 8)]


def pick_size(rng):
    if rng.random() < 0.2:
        long_side = rng.randint(300, 800)
        aspect = rng.uniform(1.0, 1.6)
        short_side = max(64, round(long_side / aspect))
        return (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
    total = sum(w for _, _, w in SHAPES)
    r = rng.uniform(0, total)
    for w, h, weight in SHAPES:
        r -= weight
        if r <= 0:
            return w, h
    return SHAPES[0][:2]


def make_sample(rng, photos):
    label = rng.randrange(len(photos))
    photo = photos[label]
    out_w, out_h = pick_size(rng)
    pw, ph = photo.size
    # A window with the output's aspect ratio whose shorter side is 50-100% of the photo's shorter side.
    frac = rng.uniform(0.5, 1.0)
    if out_w / out_h >= pw / ph:
        win_w = max(out_w // 4, round(pw * frac))
        win_h = round(win_w * out_h / out_w)
    else:
        win_h = max(out_h // 4, round(ph * frac))
        win_w = round(win_h * out_w / out_h)
    win_w, win_h = min(win_w, pw), min(win_h, ph)
    x = rng.randint(0, pw - win_w)
    y = rng.randint(0, ph - win_h)
    crop = photo.crop((x, y, x + win_w, y + win_h)).resize((out_w, out_h), Image.LANCZOS)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=90, subsampling="4:2:0", optimize=False)
    return buf.getvalue(), label


def add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_shard(job):
    out, seed, shard, first, end, sources = job
    rng = random.Random(f"{seed}-{shard}")
    photos = [Image.open(p).convert("RGB") for p in sources]
    path = os.path.join(out, f"shard-{shard:06d}.tar")
    total = 0
    with tarfile.open(path + ".tmp", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(first, end):
            jpeg, label = make_sample(rng, photos)
            total += len(jpeg)
            add_member(tar, f"{i:06d}.jpg", jpeg)
            add_member(tar, f"{i:06d}.cls", str(label).encode())
    os.replace(path + ".tmp", path)
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder for shard-NNNNNN.tar")
    parser.add_argument("--count", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--shard-size", type=int, default=256, help="images per shard (default 256)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    parser.add_argument("--sources", help="folder holding the source photographs (default: the Debian packages' paths)")
    parser.add_argument("--export-sources", metavar="DIR", help="copy the source photographs to DIR and stop")
    args = parser.parse_args()
    if args.count < 1 or args.shard_size < 1 or args.jobs < 1:
        parser.error("--count, --shard-size and --jobs must be positive")

    sources = SOURCES
    if args.sources:
        sources = [os.path.join(args.sources, source_name(p)) for p in SOURCES]
    missing = [p for p in sources if not os.path.exists(p)]
    if missing:
        sys.exit(f"make_corpus.py: source photographs missing ({missing[0]} …): run make-corpus.sh, "
                 "which installs mate-backgrounds and plasma-workspace-wallpapers, or pass --sources")
    if args.export_sources:
        os.makedirs(args.export_sources, exist_ok=True)
        for p in sources:
            shutil.copyfile(p, os.path.join(args.export_sources, source_name(p)))
        print(f"{len(sources)} source photographs copied to {args.export_sources}")
        return

    os.makedirs(args.out, exist_ok=True)
    shards = (args.count + args.shard_size - 1) // args.shard_size
    jobs = [(args.out, args.seed, s, s * args.shard_size, min(args.count, (s + 1) * args.shard_size), sources)
            for s in range(shards)]
    with multiprocessing.Pool(min(args.jobs, shards)) as pool:
        total_bytes = sum(pool.map(write_shard, jobs, chunksize=1))
    print(f"{args.count} JPEGs in {shards} shards under {args.out}, "
          f"mean {total_bytes / args.count / 1024:.1f} KiB, {len(sources)} source photographs, seed {args.seed}")


def source_name(path):
    """A flat, unique file name for a source photograph: Aqua.jpg, Kite.jpg, ..."""
    parts = path.split(os.sep)
    return parts[-4] + ".jpg" if "contents" in parts else parts[-1]


if __name__ == "__main__":
    main()
