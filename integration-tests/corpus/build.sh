#!/usr/bin/env bash
# Builds the corpus: real third-party C programs, from the sources that
# registry crates bundle (pinned in Cargo.toml / Cargo.lock next to this
# script), compiled to wasm32-wasi command modules with Debian's clang-14 and
# wasi-libc. Each NAME_bench.c here is a driver with a deterministic workload;
# NAME.wasm is committed next to it. sqlite_file.c (-> sqlite_file.wasm) is
# SQLite with its real unix VFS, on a database file through the WASI
# filesystem (preopened directories).
#
# Usage: integration-tests/corpus/build.sh           build every program
#        integration-tests/corpus/build.sh --check   rebuild into a temp dir and
#                                                    fail if a committed .wasm differs
#
# Called by deploy/examples/build.sh. Needs `cargo` (to fetch the crates'
# sources from the registry; nothing is compiled for the host) and the
# toolchain scripts/install-deps installs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLANG=${CLANG:-clang-14}
JOBS=${JOBS:-$(nproc)}

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

cd "$HERE"
cargo fetch --locked --manifest-path Cargo.toml --quiet
# The directory of each pinned crate's sources, from cargo's own metadata.
declare -A SRC
while read -r name dir; do SRC[$name]=$dir; done < <(
  cargo metadata --locked --format-version 1 --manifest-path Cargo.toml 2>/dev/null | python3 -c '
import json, os, sys
for package in json.load(sys.stdin)["packages"]:
    print(package["name"], os.path.dirname(package["manifest_path"]))')
REGISTRY=$(dirname "${SRC[libsqlite3-sys]}")

COMMON=(
  --target=wasm32-wasi --sysroot=/usr
  -O2 -g0 -Wl,--strip-debug -DNDEBUG
  -w                                    # third-party code: its warnings are not ours to fix
  -ffile-prefix-map="$REGISTRY"=/registry -ffile-prefix-map="$HERE"=/corpus
  -Wl,-z,stack-size=1048576             # 1 MiB of shadow stack: interpreters recurse
)

sqlite=${SRC[libsqlite3-sys]}/sqlite3
lua=${SRC[lua-src]}/lua-5.4.8
quickjs=${SRC[rquickjs-sys]}/quickjs
zstd=${SRC[zstd-sys]}/zstd/lib
zlib=${SRC[libz-sys]}/src/zlib

# name -> compiler arguments (flags and sources)
declare -A PROGRAM
PROGRAM[sqlite]="-DSQLITE_OS_OTHER=1 -DSQLITE_THREADSAFE=0 -DSQLITE_TEMP_STORE=3 -DSQLITE_OMIT_LOAD_EXTENSION
  -DSQLITE_OMIT_WAL -DSQLITE_OMIT_SHARED_CACHE -DSQLITE_DEFAULT_MEMSTATUS=0 -DLONGDOUBLE_TYPE=double
  -I$sqlite sqlite_bench.c $sqlite/sqlite3.c"
# SQLite's os_unix.c knows wasi (__wasi__: no fchmod/fchown/mremap, getpid
# stubbed, no <sys/mman.h>); the driver picks the lock-free "unix-none" VFS
# (wasi has no fcntl locks). No WAL (it needs shared memory), no mmap, temp
# files in memory.
PROGRAM[sqlite_file]="-DSQLITE_THREADSAFE=0 -DSQLITE_TEMP_STORE=3 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_WAL
  -DSQLITE_MAX_MMAP_SIZE=0 -DSQLITE_OMIT_SHARED_CACHE -DSQLITE_DEFAULT_MEMSTATUS=0 -DLONGDOUBLE_TYPE=double
  -I$sqlite sqlite_file.c $sqlite/sqlite3.c"
lua_sources=$(cd "$lua" && ls ./*.c | grep -v -E '/(lua|luac|linit|liolib|loslib|loadlib|ldblib|lcorolib|lutf8lib)\.c$' |
  LC_ALL=C sort | sed "s|^\./|$lua/|" | tr '\n' ' ')
# No setjmp on wasm32-wasi with clang-14: a Lua error aborts (include-lua/lua_wasi.h).
PROGRAM[lua]="-Iinclude-lua -include lua_wasi.h -I$lua lua_bench.c $lua_sources"
PROGRAM[quickjs]="-D_GNU_SOURCE -I$quickjs quickjs_bench.c $quickjs/quickjs.c $quickjs/libregexp.c
  $quickjs/libunicode.c $quickjs/cutils.c $quickjs/libbf.c"
zstd_sources=$(ls "$zstd"/common/*.c "$zstd"/compress/*.c "$zstd"/decompress/*.c | LC_ALL=C sort | tr '\n' ' ')
PROGRAM[zstd]="-DZSTD_DISABLE_ASM -DZSTD_LEGACY_SUPPORT=0 -I$zstd -I$zstd/common zstd_bench.c $zstd_sources"
PROGRAM[zlib]="-DHAVE_UNISTD_H -I$zlib zlib_bench.c $zlib/adler32.c $zlib/compress.c $zlib/crc32.c
  $zlib/deflate.c $zlib/inffast.c $zlib/inflate.c $zlib/inftrees.c $zlib/trees.c $zlib/uncompr.c $zlib/zutil.c"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# clang runs `wasm-opt` on what it links when it finds one (Debian's binaryen
# package installs /usr/bin/wasm-opt), which would change the modules: a
# no-op stand-in in a -B directory, searched first, keeps the builds
# identical on every machine.
mkdir -p "$tmp/no-wasm-opt"
printf '#!/bin/sh\nexit 0\n' > "$tmp/no-wasm-opt/wasm-opt"
chmod +x "$tmp/no-wasm-opt/wasm-opt"
COMMON+=(-B "$tmp/no-wasm-opt")

build() {
  local name=$1
  local -a args
  read -r -a args <<< "$(echo "${PROGRAM[$name]}" | tr '\n' ' ')"
  "$CLANG" "${COMMON[@]}" "${args[@]}" -o "$tmp/$name.wasm"
}

names=(lua quickjs sqlite sqlite_file zlib zstd)
pids=()
for name in "${names[@]}"; do
  build "$name" &
  pids+=($!)
  # at most JOBS compilers at once
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[[ $failed -eq 0 ]] || { echo "corpus: a program failed to build" >&2; exit 1; }

stale=0
for name in "${names[@]}"; do
  if [[ $check -eq 1 ]]; then
    if ! cmp -s "$tmp/$name.wasm" "$name.wasm"; then
      echo "corpus: integration-tests/corpus/$name.wasm is missing or out of date (run deploy/examples/build.sh)" >&2
      stale=1
    fi
  else
    mv -f "$tmp/$name.wasm" "$name.wasm"
    chmod 0644 "$name.wasm"
    echo "built integration-tests/corpus/$name.wasm"
  fi
done
if [[ $check -eq 1 ]]; then
  [[ $stale -eq 0 ]] && echo "corpus: all ${#names[@]} programs up to date"
  exit $stale
fi
