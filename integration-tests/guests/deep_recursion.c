/*
 * deep_recursion — test guest for capturing deep stacks: recursion thousands
 * of frames deep, through indirect calls, with i32, i64 and f64 locals live
 * across every call.
 *
 * Usage: deep_recursion [depth] [rounds]
 *   depth   recursion depth, 1..100000 (default 6000)
 *   rounds  number of rounds (default 25)
 *
 * Each round makes 16 walks (DESCENTS) from level `depth` down to level 0 and
 * back.
 * Every level calls the next one through a table of four functions of the
 * same type (call_indirect), the entry chosen from the level and the running
 * hash, and combines its own i32/i64/f64 locals with the result after the call
 * returns. Every level also runs a short loop (before or after its call), and
 * level 0 a long one, so about half the run time is spent with the whole
 * stack (depth + 1 frames of the walk) in place and half on the way down/up.
 * No locals have their address taken: the frames live on the wasm value stack
 * (the engine's native stack), not on the 64 KiB C shadow stack. Measured
 * under wasmtime (Cranelift), plain module: ~84 bytes of native stack per
 * level, so depth 6000 needs ~500 KB (an instrumented module needs more).
 *
 * Output, all deterministic:
 *   start depth D rounds R
 *   round N depth D hash HHHHHHHHHHHHHHHH x XXX      (one per round)
 *   done rounds R depth D hash HHHHHHHHHHHHHHHH      (then exit 0)
 * HEX is 16 hex digits, XXX a double printed with %.17g.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "args.h"

#define DESCENTS 16
#define BOTTOM_ITERS 1500000
#define LEVEL_ITERS 450

typedef uint64_t (*level_fn)(int32_t level, uint64_t h, double x);

static level_fn table[4];
/* volatile: the loop counts are not folded into the code. */
static volatile int32_t bottom_iters = BOTTOM_ITERS;
static volatile int32_t level_iters = LEVEL_ITERS;

static inline uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    return h * 0xBF58476D1CE4E5B9ULL;
}

static inline level_fn pick(int32_t level, uint64_t h) {
    return table[((uint32_t)level * 7u + (uint32_t)(h >> 61)) & 3u];
}

/* Some work at every level, before or after the deeper call. */
static inline uint64_t churn(uint64_t h, int32_t a) {
    int32_t n = level_iters;
    for (int32_t i = 0; i < n; i++) {
        h = (h ^ (uint64_t)(a + i)) * 0x100000001B3ULL;
    }
    return h;
}

/* The work at the bottom of the stack; x stays in [0, 1). */
static uint64_t bottom(uint64_t h, double x) {
    int32_t n = bottom_iters;
    uint32_t w = (uint32_t)h | 1u;
    for (int32_t i = 0; i < n; i++) {
        x = 3.9 * x * (1.0 - x);
        w = w * 1664525u + 1013904223u;
        h = (h ^ w) * 0x100000001B3ULL + (uint64_t)(x * 4294967296.0);
    }
    return h;
}

static uint64_t level_a(int32_t level, uint64_t h, double x) {
    int32_t a = level * 31 + (int32_t)(h & 0xff);
    int64_t b = (int64_t)(h >> 3) - level;
    double c = x * 0.75 + 0.125;
    if (level == 0) {
        return bottom(h, c);
    }
    h = churn(h, a);
    uint64_t r = pick(level, h)(level - 1, mix(h, (uint64_t)a), c);
    return mix(r, (uint64_t)(a * 7) ^ (uint64_t)b) + (uint64_t)(c * 1048576.0);
}

static uint64_t level_b(int32_t level, uint64_t h, double x) {
    int64_t b = (int64_t)(h * 3) ^ ((int64_t)level << 20);
    double c = 1.0 - x * 0.5;
    int32_t a = (int32_t)(b >> 40) - level;
    if (level == 0) {
        return bottom(h ^ (uint64_t)b, c);
    }
    uint64_t r = pick(level, h)(level - 1, mix(h, (uint64_t)b), c * 0.9);
    r = churn(r, a) ^ (uint64_t)(c * 65536.0);
    return mix(r + (uint64_t)a, (uint64_t)b);
}

static uint64_t level_c(int32_t level, uint64_t h, double x) {
    double c = x * x;
    int32_t a = (int32_t)(h >> 17) ^ level;
    int64_t b = (int64_t)level * -1234567891LL;
    if (level == 0) {
        return bottom(h + (uint64_t)a, c);
    }
    h = churn(h, a);
    uint64_t r = pick(level, h)(level - 1, h + (uint64_t)a * 0x2545F4914F6CDD1DULL, c);
    return mix(r, (uint64_t)(b + a)) ^ (uint64_t)(c * 1e9);
}

static uint64_t level_d(int32_t level, uint64_t h, double x) {
    int32_t a = level ^ 0x5a5a;
    double c = (x + 0.5) / 1.5;
    int64_t b = (int64_t)(h ^ 0xFFFF0000FFFF0000ULL) >> 7;
    uint64_t r;
    if (level == 0) {
        r = bottom(h, c);
    } else {
        r = pick(level, h)(level - 1, mix(h, (uint64_t)(a + 1)), c);
        r = churn(r, a);
    }
    return (r * 31u) ^ (uint64_t)b ^ (uint64_t)a ^ (uint64_t)(c * 4096.0);
}

int main(int argc, char **argv) {
    uint64_t depth = 6000, rounds = 25;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u64(argv[1], &depth) != 0) ||
        (argc > 2 && parse_u64(argv[2], &rounds) != 0) || argc > 3 || depth < 1 ||
        depth > 100000) {
        fprintf(stderr, "usage: deep_recursion [depth (1..100000)] [rounds]\n");
        return 2;
    }
    table[0] = level_a;
    table[1] = level_b;
    table[2] = level_c;
    table[3] = level_d;

    printf("start depth %llu rounds %llu\n", (unsigned long long)depth,
           (unsigned long long)rounds);
    uint64_t h = 0x0123456789ABCDEFULL;
    double x = 0.3;
    for (uint64_t round = 1; round <= rounds; round++) {
        for (int k = 0; k < DESCENTS; k++) {
            h = pick((int32_t)depth, h)((int32_t)depth, h + round, x);
            x = (double)(h >> 11) * 0x1p-53; /* [0, 1) */
        }
        printf("round %llu depth %llu hash %016llx x %.17g\n", (unsigned long long)round,
               (unsigned long long)depth, (unsigned long long)h, x);
    }
    printf("done rounds %llu depth %llu hash %016llx\n", (unsigned long long)rounds,
           (unsigned long long)depth, (unsigned long long)h);
    return 0;
}
