/* Included into every Lua source file of lua_bench (clang -include).
 * wasi-libc has no setjmp and clang-14 cannot lower it for wasm32, so a Lua
 * error cannot unwind to its handler: it prints the error and aborts. */
#ifndef LUA_WASI_H
#define LUA_WASI_H
struct lua_State;
void lua_bench_fatal(struct lua_State *L, int status);
#define LUAI_THROW(L, c) lua_bench_fatal(L, (c)->status)
#define LUAI_TRY(L, c, a) { a }
#define luai_jmpbuf int
#define l_signalT int
#define l_randomizePivot() 0
#endif
