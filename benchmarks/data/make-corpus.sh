#!/usr/bin/env bash
# Builds the JPEG benchmark corpus: ImageNet-sized crops of the photographs in Debian's
# mate-backgrounds and plasma-workspace-wallpapers, in WebDataset tar shards (NNNNNN.jpg + NNNNNN.cls).
#   bash benchmarks/data/make-corpus.sh [OUT_DIR] [COUNT] [SEED]
# Defaults: /tmp/kiln-jpeg-corpus, 2000 images, seed 1234; SHARD_SIZE (env) images a shard, default 256.
# Deterministic for a seed. Extra make_corpus.py options can follow in MAKE_CORPUS_ARGS.
# Needs root for apt-get when the packages are missing. The corpus is generated data: never commit it.
set -euo pipefail

out="${1:-/tmp/kiln-jpeg-corpus}"
count="${2:-2000}"
seed="${3:-1234}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

need=()
[[ -d /usr/share/backgrounds/mate/nature ]] || need+=(mate-backgrounds)
[[ -f /usr/share/wallpapers/Kite/contents/images/2560x1600.jpg ]] || need+=(plasma-workspace-wallpapers)
/usr/bin/python3 -c 'import PIL' 2>/dev/null || need+=(python3-pil)
if ((${#need[@]})); then
  echo "make-corpus: installing ${need[*]}" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

/usr/bin/python3 "$here/make_corpus.py" "$out" --count "$count" --seed "$seed" --shard-size "${SHARD_SIZE:-256}" ${MAKE_CORPUS_ARGS:-}
