/*
 * lua_bench — Lua 5.4 (as the lua-src crate bundles it) running a benchmark
 * script: recursive calls, table inserts and sorts, string building and
 * pattern matching, floating point, closures.
 *
 * Usage: lua_bench [rounds=6] [size=200000]
 *
 * Prints `round N checksum C` per round and `lua done checksum C` at the
 * end. Lua's error unwinding (setjmp/longjmp) does not exist on wasm32-wasi
 * with clang-14, so a Lua error prints its message and aborts the program;
 * the script raises none.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

static const char *const script =
    "local rounds, size = ...\n"
    "local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end\n"
    "local seed = 12345\n"
    "local function rand() seed = (seed * 1103515245 + 12345) % 2147483648; return seed end\n"
    "local checksum = 0\n"
    "local function mix(x) checksum = (checksum * 31 + x) % 4294967291 end\n"
    "for round = 1, rounds do\n"
    "  mix(fib(22 + round % 3))\n"
    "  local t = {}\n"
    "  for i = 1, size do t[i] = rand() % 100000 end\n"
    "  table.sort(t)\n"
    "  for i = 1, size, 97 do mix(t[i]) end\n"
    "  local parts = {}\n"
    "  for i = 1, size // 10 do parts[#parts + 1] = string.format('%d:%x', i, t[i]) end\n"
    "  local s = table.concat(parts, ',')\n"
    "  local count = 0\n"
    "  for a, b in s:gmatch('(%d+):(%x+)') do count = count + #a + #b end\n"
    "  mix(count)\n"
    "  local acc = 0.0\n"
    "  for i = 1, size do acc = acc + math.sin(i * 0.001) * math.sqrt(i) end\n"
    "  mix(math.floor(acc * 1000) % 1000000007)\n"
    "  local counters = {}\n"
    "  for i = 1, size // 4 do\n"
    "    local key = 'k' .. (t[i] % 512)\n"
    "    counters[key] = (counters[key] or 0) + 1\n"
    "  end\n"
    "  local keys = {}\n"
    "  for k in pairs(counters) do keys[#keys + 1] = k end\n"
    "  table.sort(keys)\n"
    "  for _, k in ipairs(keys) do mix(counters[k]) end\n"
    "  local adders = {}\n"
    "  for i = 1, 1000 do adders[i] = function(x) return x + i end end\n"
    "  local v = 0\n"
    "  for j = 1, size // 10 do v = adders[j % 1000 + 1](v) % 1000003 end\n"
    "  mix(v)\n"
    "  print(string.format('round %d checksum %d', round, checksum))\n"
    "end\n"
    "print(string.format('lua done checksum %d', checksum))\n";

/* LUAI_THROW (include-lua/lua_wasi.h): no handler can be reached. */
void lua_bench_fatal(lua_State *L, int status) {
  const char *message = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)";
  fprintf(stderr, "lua_bench: lua error %d: %s\n", status, message);
  abort();
}

int main(int argc, char **argv) {
  lua_Integer rounds = argc > 1 ? atoi(argv[1]) : 6;
  lua_Integer size = argc > 2 ? atoi(argv[2]) : 200000;
  lua_State *L = luaL_newstate();
  if (!L) return 1;
  luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
  luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
  lua_settop(L, 0);
  if (luaL_loadstring(L, script) != LUA_OK) {
    fprintf(stderr, "lua_bench: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pushinteger(L, rounds);
  lua_pushinteger(L, size);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "lua_bench: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_close(L);
  return 0;
}
