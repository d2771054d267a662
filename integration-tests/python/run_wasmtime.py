#!/usr/bin/env python3
"""Runs a wasm32-wasi command module on wasmtime (the PyPI package), the
reference runtime the corpus is compared against.

Usage: run_wasmtime.py [--time] [--ferry-hooks] MODULE.wasm [ARGS...]

Writes the guest's stdout to stdout. With --time, also prints to stderr a
JSON line {"compile_ms": .., "run_ms": ..}: the compile of the module and its
run, each timed in this process. With --ferry-hooks, a module instrumented
by Ferry runs too: its `ferry.__preempt` answers the next countdown and its
`ferry.__memory_grow` grows memory (no limit); it is never unwound.
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


def main() -> int:
    args = sys.argv[1:]
    timed = False
    hooks = False
    while args and args[0] in ("--time", "--ferry-hooks"):
        timed = timed or args[0] == "--time"
        hooks = hooks or args[0] == "--ferry-hooks"
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
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
