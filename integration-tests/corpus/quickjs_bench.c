/*
 * quickjs_bench — QuickJS (quickjs-ng, as the rquickjs-sys crate bundles it)
 * running a JavaScript benchmark: objects and classes, arrays and sorts,
 * closures, string building, regular expressions, JSON, Map.
 *
 * Usage: quickjs_bench [rounds=6] [size=60000]
 *
 * Prints `round N checksum C` per round and `quickjs done checksum C`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quickjs.h"

static const char *const script =
    "'use strict';\n"
    "let seed = 12345;\n"
    "function rand() { seed = (seed * 1103515245 + 12345) % 2147483648; return seed; }\n"
    "let checksum = 0;\n"
    "function mix(x) { checksum = (checksum * 31 + (x >>> 0)) % 4294967291; }\n"
    "class Vec { constructor(x, y) { this.x = x; this.y = y; }\n"
    "  add(o) { return new Vec(this.x + o.x, this.y + o.y); }\n"
    "  len() { return Math.sqrt(this.x * this.x + this.y * this.y); } }\n"
    "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }\n"
    "function round(r, size) {\n"
    "  mix(fib(20 + r % 3));\n"
    "  const a = [];\n"
    "  for (let i = 0; i < size; i++) a.push(rand() % 100000);\n"
    "  a.sort((p, q) => p - q);\n"
    "  for (let i = 0; i < size; i += 97) mix(a[i]);\n"
    "  let v = new Vec(0, 0);\n"
    "  for (let i = 0; i < size; i++) v = v.add(new Vec(i % 7, i % 11));\n"
    "  mix(Math.floor(v.len()));\n"
    "  const parts = [];\n"
    "  for (let i = 0; i < size / 10; i++) parts.push(i.toString(16) + ':' + a[i]);\n"
    "  const s = parts.join(',');\n"
    "  let count = 0;\n"
    "  for (const m of s.matchAll(/([0-9a-f]+):(\\d+)/g)) count += m[1].length + m[2].length;\n"
    "  mix(count);\n"
    "  const objects = [];\n"
    "  for (let i = 0; i < size / 20; i++) objects.push({ id: i, name: 'n' + (a[i] % 977), tags: [i % 3, i % 5] });\n"
    "  const text = JSON.stringify(objects);\n"
    "  const back = JSON.parse(text);\n"
    "  mix(text.length); mix(back.length);\n"
    "  const counts = new Map();\n"
    "  for (const o of back) counts.set(o.name, (counts.get(o.name) || 0) + 1);\n"
    "  for (const k of [...counts.keys()].sort()) mix(counts.get(k));\n"
    "  const adders = [];\n"
    "  for (let i = 0; i < 1000; i++) adders.push(x => x + i);\n"
    "  let w = 0;\n"
    "  for (let j = 0; j < size; j++) w = adders[j % 1000](w) % 1000003;\n"
    "  mix(w);\n"
    "  return checksum;\n"
    "}\n";

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 6;
  int size = argc > 2 ? atoi(argv[2]) : 60000;
  JSRuntime *runtime = JS_NewRuntime();
  JSContext *context = JS_NewContext(runtime);
  JSValue result = JS_Eval(context, script, strlen(script), "<bench>", JS_EVAL_TYPE_GLOBAL);
  if (JS_IsException(result)) {
    JSValue error = JS_GetException(context);
    const char *message = JS_ToCString(context, error);
    fprintf(stderr, "quickjs_bench: %s\n", message ? message : "?");
    return 1;
  }
  JS_FreeValue(context, result);
  JSValue global = JS_GetGlobalObject(context);
  JSValue round_function = JS_GetPropertyStr(context, global, "round");
  double checksum = 0;
  for (int round = 1; round <= rounds; round++) {
    JSValue args[2] = {JS_NewInt32(context, round), JS_NewInt32(context, size)};
    JSValue value = JS_Call(context, round_function, global, 2, args);
    if (JS_IsException(value)) {
      JSValue error = JS_GetException(context);
      const char *message = JS_ToCString(context, error);
      fprintf(stderr, "quickjs_bench: %s\n", message ? message : "?");
      return 1;
    }
    JS_ToFloat64(context, &checksum, value);
    JS_FreeValue(context, value);
    printf("round %d checksum %.0f\n", round, checksum);
    fflush(stdout);
  }
  printf("quickjs done checksum %.0f\n", checksum);
  JS_FreeValue(context, round_function);
  JS_FreeValue(context, global);
  JS_FreeContext(context);
  JS_FreeRuntime(runtime);
  return 0;
}
