#!/bin/sh
# The SHA-256 kernel question of issue #28, measured: CPU s/GiB to hash 512 KiB EBS direct
# blocks one at a time with sha2 (what EBS direct does) and in groups with each kernel of
# src/sha256.rs, best of ROUNDS, single-threaded; then the host's CPU features.
# Usage: bench/sha-blocks.sh [GIB] [ROUNDS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target=${IMGPUB_BENCH_DIR:-$HOME/.cache/imgpub/bench}/target
CARGO_TARGET_DIR=$target cargo build --quiet --release --manifest-path "$here/sha-blocks/Cargo.toml"
"$target/release/sha-blocks" "$@"
echo "CPU features: $(grep -m1 -o -w -E 'sha_ni|avx512f|avx512bw|avx2|aes|vaes' /proc/cpuinfo | sort -u | tr '\n' ' ')"
