#!/usr/bin/env bash
# Runs the tests on a software Vulkan adapter that has cooperative matrices, so the
# cooperative-matrix kernels are checked without a GPU: lavapipe from Mesa >= 25.1 offers
# VK_KHR_cooperative_matrix (8x8, f16 inputs, f32 accumulators), Debian bookworm's 22.3 does not.
#
# Debian sid's Mesa and the libraries it needs (its glibc included) are unpacked into
# target/coop-lavapipe, nothing is installed; each test binary then runs under sid's dynamic
# loader (cargo's target runner), with sid's lavapipe as the only Vulkan driver.
#
#   scripts/coop_lavapipe.sh                  # every test except the ones that start the CLI binary
#   scripts/coop_lavapipe.sh --test matmul coop  # cargo test arguments
#
# The CLI tests (kernels-tests/cli.rs, bench_model's cli_*) start `wgmoe` as a child process, which
# would run on the system's loader and cannot load sid's driver: they are skipped here.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/target/coop-lavapipe"
sysroot="$root/sysroot"

if [ ! -f "$sysroot/usr/share/vulkan/icd.d/lvp_icd.json" ]; then
    echo "fetching lavapipe from Debian sid into $root" >&2
    mkdir -p "$root/lists/partial" "$root/debs" "$sysroot"
    echo 'deb http://deb.debian.org/debian sid main' >"$root/sources.list"
    apt=(-oDir::Etc::SourceList="$root/sources.list" -oDir::Etc::SourceParts=/dev/null
        -oDir::State::Lists="$root/lists" -oDir::State::status=/dev/null -oAPT::Architecture=amd64)
    apt-get "${apt[@]}" update >/dev/null
    pkgs=$(apt-cache "${apt[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances mesa-vulkan-drivers libvulkan1 libc6 |
        grep -v '^ ' | grep -v '<' | sort -u)
    (cd "$root/debs" && apt-get "${apt[@]}" download $pkgs >/dev/null 2>&1)
    for f in "$root"/debs/*.deb; do dpkg -x "$f" "$sysroot"; done
    sed -i "s#\"library_path\": \"[^\"]*\"#\"library_path\": \"$sysroot/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so\"#" \
        "$sysroot/usr/share/vulkan/icd.d/lvp_icd.json"
fi

runner="$root/run"
cat >"$runner" <<EOF
#!/bin/sh
export XDG_RUNTIME_DIR=\${XDG_RUNTIME_DIR:-/tmp} VK_ICD_FILENAMES=$sysroot/usr/share/vulkan/icd.d/lvp_icd.json
exec $sysroot/usr/lib64/ld-linux-x86-64.so.2 --library-path $sysroot/usr/lib/x86_64-linux-gnu "\$@"
EOF
chmod +x "$runner"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$runner"

if [ $# -gt 0 ]; then
    exec cargo test --release "$@"
fi
targets=()
for f in kernels-tests/*.rs; do
    name=$(basename "$f" .rs)
    [ "$name" = cli ] || targets+=(--test "$name")
done
cargo test --release --no-fail-fast --lib "${targets[@]}" -- --skip cli_
