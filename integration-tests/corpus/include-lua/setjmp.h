/* wasi-libc has no setjmp (clang-14 cannot lower it for wasm32): Lua's
 * error handling is replaced by include-lua/lua_wasi.h, so this empty header
 * only satisfies ldo.c's #include. */
