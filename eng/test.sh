#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for Kiln's tests and runs them all:
#   1. installs the system packages the tests start for real (apt-get; only what is missing),
#   2. builds the solution with warnings as errors,
#   3. runs every test project and prints one closing line: "N passed, N failed, N skipped".
# Exits non-zero when anything fails. Run from anywhere: bash eng/test.sh [extra dotnet test args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Real engines the tests use (see docs/development.md for what each is for).
packages=(openmpi-bin libturbojpeg0)
# Kiln.Launch: a real single-node Slurm (controller, node daemon, munge) and etcd for the rendezvous tests.
packages+=(slurmctld slurmd slurm-client munge etcd-server etcd-client)
# Node.js for s3rver (Kiln.Data's S3 tests); a Node.js that already brings npm is kept.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "eng/test.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# scikit-learn's digits set (digits.csv.gz) for the distributed samples' test, taken out of Debian's python3-sklearn
# package without installing it (or its dependencies); cached under artifacts/cache.
digits="$root/artifacts/cache/digits.csv.gz"
if [ ! -s "$digits" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  download=$(mktemp -d)
  chmod 755 "$download"
  if ! (cd "$download" && apt-get download -qq python3-sklearn 2>/dev/null); then
    $sudo apt-get update -qq
    (cd "$download" && apt-get download -qq python3-sklearn)
  fi
  mkdir -p "$(dirname "$digits")"
  dpkg-deb --fsys-tarfile "$download"/python3-sklearn_*.deb \
    | tar -x -O ./usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz > "$digits.partial"
  mv "$digits.partial" "$digits"
  rm -rf "$download"
fi
export KILN_DIGITS_CSV="$digits"

# Test servers from npm, pinned by eng/node/package-lock.json (s3rver for Kiln.Data's remote tests).
npm ci --prefix "$root/eng/node" --no-audit --no-fund --loglevel=error

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
dotnet build Kiln.slnx -c Release -warnaserror -nologo -clp:NoSummary

results="$root/artifacts/test-results"
rm -rf "$results"
status=0
dotnet test Kiln.slnx -c Release --no-build --nologo --logger trx --results-directory "$results" "$@" || status=$?

# One closing line summed over every test project, from the TRX files.
passed=0 failed=0 skipped=0 total=0
shopt -s nullglob
for trx in "$results"/*.trx; do
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
  get() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$counters"; }
  t=$(get total); e=$(get executed); p=$(get passed); f=$(get failed)
  total=$((total + ${t:-0})); passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0} + $(get error) + $(get timeout) + $(get aborted)))
  skipped=$((skipped + ${t:-0} - ${e:-0}))
done
if [ "$total" -eq 0 ]; then
  echo "eng/test.sh: no test results found" >&2
  status=1
fi
[ "$failed" -eq 0 ] || status=1
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
