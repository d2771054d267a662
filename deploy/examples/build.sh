#!/usr/bin/env bash
# Builds the C guest programs to wasm32-wasi command modules.
#
# Every X.c under deploy/examples/ and integration-tests/guests/ becomes X.wasm
# next to it; then integration-tests/corpus/build.sh builds the corpus of real
# programs (SQLite, Lua, QuickJS, zstd, zlib). The .wasm files are committed, so users without a C toolchain can
# deploy them; rebuild and commit them whenever a .c file changes. Builds are
# deterministic: the same sources and toolchain give byte-identical modules.
#
# Usage: deploy/examples/build.sh           build everything
#        deploy/examples/build.sh --check   rebuild into a temp dir and fail if
#                                           any committed .wasm differs
#
# Toolchain (Debian): clang-14, lld-14, wasi-libc, libclang-rt-14-dev-wasm32,
# installed by scripts/install-deps. CLANG may name another clang binary.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLANG=${CLANG:-clang-14}
SYSROOT=/usr
CFLAGS=(
  --target=wasm32-wasi
  --sysroot="$SYSROOT"
  -O2
  -std=gnu11
  -Wall -Wextra -Werror
  -I deploy/examples/include
  # No debug info, no paths of this checkout in the output.
  -g0
  -Wl,--strip-debug
)

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

die_toolchain() {
  echo "build.sh: $1" >&2
  echo "build.sh: install the wasm32-wasi C toolchain with: sudo scripts/install-deps" >&2
  exit 1
}

command -v "$CLANG" >/dev/null 2>&1 || die_toolchain "$CLANG not found"
[[ -e "$SYSROOT/lib/wasm32-wasi/libc.a" ]] || die_toolchain "wasi-libc not found ($SYSROOT/lib/wasm32-wasi/libc.a)"
rt=$("$CLANG" --target=wasm32-wasi --sysroot="$SYSROOT" -print-libgcc-file-name 2>/dev/null || true)
[[ -n "$rt" && -e "$rt" ]] || die_toolchain "compiler-rt builtins for wasm32 not found (${rt:-?})"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# clang runs `wasm-opt` on what it links when it finds one (Debian's binaryen
# package installs /usr/bin/wasm-opt), which would change the modules: a
# no-op stand-in in a -B directory, searched first, keeps the builds
# identical on every machine.
mkdir -p "$tmp/no-wasm-opt"
printf '#!/bin/sh\nexit 0\n' > "$tmp/no-wasm-opt/wasm-opt"
chmod +x "$tmp/no-wasm-opt/wasm-opt"
CFLAGS+=(-B "$tmp/no-wasm-opt")

# Probe the whole chain (compiler, wasm-ld, libc) once for a clear message.
printf 'int main(void){return 0;}\n' > "$tmp/probe.c"
"$CLANG" "${CFLAGS[@]}" "$tmp/probe.c" -o "$tmp/probe.wasm" 2> "$tmp/probe.err" ||
  { cat "$tmp/probe.err" >&2; die_toolchain "cannot link a wasm32-wasi program (is lld-14 / wasm-ld installed?)"; }

cd "$ROOT"
mapfile -t sources < <(find deploy/examples integration-tests/guests -name '*.c' -type f | LC_ALL=C sort)
[[ ${#sources[@]} -gt 0 ]] || { echo "build.sh: no .c files found" >&2; exit 1; }

stale=0
for src in "${sources[@]}"; do
  out="${src%.c}.wasm"
  built="$tmp/$(echo "$out" | tr / _)"
  "$CLANG" "${CFLAGS[@]}" "$src" -o "$built"
  if [[ $check -eq 1 ]]; then
    if ! cmp -s "$built" "$out"; then
      echo "build.sh: $out is missing or out of date (run deploy/examples/build.sh)" >&2
      stale=1
    fi
  else
    mv -f "$built" "$out"
    chmod 0644 "$out"
    echo "built $out"
  fi
done

if [[ $check -eq 1 ]]; then
  [[ $stale -eq 0 ]] && echo "build.sh: all ${#sources[@]} modules up to date"
fi

# The corpus of real third-party programs has build rules of its own.
integration-tests/corpus/build.sh "$@" || stale=1
exit $stale
