#!/usr/bin/env python3
"""Runs a wasm32-wasi command module on wasmtime (the PyPI package), the
reference runtime the corpus is compared against.

Usage: run_wasmtime.py [--time] [--ferry-hooks] [--dir HOST::GUEST]...
                       [--ro-dir HOST::GUEST]... [--env NAME=VALUE]...
                       MODULE.wasm [ARGS...]

Writes the guest's stdout to stdout. With --time, also prints to stderr a
JSON line {"compile_ms": .., "run_ms": ..}: the compile of the module and its
run, each timed in this process. With --ferry-hooks, a module instrumented
by Ferry runs too: its `ferry.__preempt` answers the next countdown and its
`ferry.__memory_grow` grows memory (no limit); it is never unwound.
--dir HOST::GUEST preopens the host directory HOST under the guest path GUEST
(like wasmtime's own CLI `--dir`), --ro-dir likewise but read-only (files and
directories in it can be read, not changed); each may be given several times,
and the preopens are numbered from fd 3 in the order given. --env sets an
environment variable of the guest (it has none otherwise).
"""
import json
import os
import sys
import tempfile
import time

import wasmtime


def define_ferry_hooks(linker: wasmtime.Linker, store: wasmtime.Store) -> None:
    i32 = wasmtime.ValType.i32()

    def preempt() -> int:
        return 10_000

    def memory_grow(caller: wasmtime.Caller, pages: int) -> int:
        memory = caller["memory"]
        before = memory.size(caller)
        try:
            memory.grow(caller, pages)
        except wasmtime.WasmtimeError:
            return -1
        return before

    linker.define_func("ferry", "__preempt", wasmtime.FuncType([], [i32]), preempt)
    linker.define_func("ferry", "__memory_grow", wasmtime.FuncType([i32], [i32]), memory_grow, access_caller=True)


def usage() -> int:
    print(__doc__, file=sys.stderr)
    return 2


def main() -> int:
    args = sys.argv[1:]
    timed = False
    hooks = False
    preopens = []  # (host, guest, mutable)
    env = []  # (name, value)
    while args and args[0] in ("--time", "--ferry-hooks", "--dir", "--ro-dir", "--env"):
        option = args[0]
        if option in ("--time", "--ferry-hooks"):
            timed = timed or option == "--time"
            hooks = hooks or option == "--ferry-hooks"
            args = args[1:]
            continue
        if len(args) < 2:
            return usage()
        value = args[1]
        args = args[2:]
        if option == "--env":
            name, equals, setting = value.partition("=")
            if not name or not equals:
                return usage()
            env.append((name, setting))
            continue
        host, separator, guest = value.partition("::")
        if not separator:
            # Like wasmtime's CLI: a bare directory is preopened under its own name.
            guest = host
        if not host or not guest:
            return usage()
        preopens.append((host, guest, option == "--dir"))
    if not args:
        return usage()
    path = args[0]
    with open(path, "rb") as file:
        wasm = file.read()
    engine = wasmtime.Engine()
    started = time.perf_counter()
    module = wasmtime.Module(engine, wasm)
    compiled = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        out_path = os.path.join(scratch, "stdout")
        err_path = os.path.join(scratch, "stderr")
        wasi = wasmtime.WasiConfig()
        wasi.argv = [os.path.basename(path)] + args[1:]
        wasi.stdout_file = out_path
        wasi.stderr_file = err_path
        if env:
            wasi.env = env
        for host, guest, mutable in preopens:
            wasi.preopen_dir(host, guest, mutable)
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        if hooks:
            define_ferry_hooks(linker, store)
        instance = linker.instantiate(store, module)
        run_started = time.perf_counter()
        code = 0
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exit_trap:
            code = exit_trap.code
        except wasmtime.Trap as trap:
            print(f"run_wasmtime: trapped: {trap.message}", file=sys.stderr)
            code = 134
        finished = time.perf_counter()
        with open(out_path, "rb") as out:
            sys.stdout.buffer.write(out.read())
        with open(err_path, "rb") as err:
            sys.stderr.buffer.write(err.read())
    if timed:
        print(
            json.dumps(
                {
                    "compile_ms": (compiled - started) * 1000.0,
                    "run_ms": (finished - run_started) * 1000.0,
                }
            ),
            file=sys.stderr,
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
