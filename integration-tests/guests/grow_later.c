/*
 * grow_later — test guest for memory growth after the first checkpoint.
 *
 * Usage: grow_later [mib] [compute_rounds]
 *   mib             MiB to allocate in phase 2, 1..1024 (default 64)
 *   compute_rounds  phase 1 rounds of ~0.1 s (default 10)
 *
 * Phase 1 computes on a 4 KiB static array only: no malloc beyond what libc
 * does at start-up (argv), so linear memory keeps its initial size while a
 * checkpoint is likely to be taken. Phase 2 mallocs 1 MiB blocks one by one
 * (each grows linear memory), fills each with a pattern and after each block
 * rewrites every word of all blocks so far in place (twice) and checksums
 * them.
 *
 * Output, all deterministic:
 *   start mib M compute_rounds R pages P
 *   compute N hash HHHHHHHHHHHHHHHH                  (phase 1, one per round)
 *   grow N MiB pages P hash HHHHHHHHHHHHHHHH         (phase 2, one per block)
 *   done mib M pages P hash HHHHHHHHHHHHHHHH          (then exit 0)
 * P is the linear memory size in 64 KiB pages (memory.size), which a
 * checkpoint and restore must preserve exactly; HEX is 16 hex digits.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "args.h"

#define BLOCK (1024 * 1024)
#define BLOCK_WORDS (BLOCK / sizeof(uint64_t))
#define MAX_MIB 1024
#define SMALL_WORDS 512   /* 4 KiB */
#define ROUND_ITERS 600000 /* passes over the small array per compute round */

static uint64_t small[SMALL_WORDS];
static uint64_t *blocks[MAX_MIB];

static unsigned long pages(void) {
    return (unsigned long)__builtin_wasm_memory_size(0);
}

static uint64_t compute_round(uint64_t h) {
    for (int it = 0; it < ROUND_ITERS; it++) {
        for (int i = 0; i < SMALL_WORDS; i += 8) {
            uint64_t v = small[i] ^ h;
            v ^= v >> 29;
            v *= 0xBF58476D1CE4E5B9ULL;
            small[i] = v;
            h = (h + v) * 0x100000001B3ULL;
        }
        h ^= (uint64_t)it;
    }
    return h;
}

/* Rewrites every word of a block in place and hashes the new contents. */
static uint64_t stir_block(uint64_t h, uint64_t *b, uint64_t step) {
    for (size_t i = 0; i < BLOCK_WORDS; i++) {
        uint64_t v = (b[i] ^ (b[i] >> 31)) * 0x94D049BB133111EBULL + step;
        b[i] = v;
        h = (h ^ v) * 0x100000001B3ULL;
        h ^= h >> 29;
    }
    return h;
}

int main(int argc, char **argv) {
    uint64_t mib = 64, rounds = 10;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u64(argv[1], &mib) != 0) ||
        (argc > 2 && parse_u64(argv[2], &rounds) != 0) || argc > 3 || mib < 1 ||
        mib > MAX_MIB) {
        fprintf(stderr, "usage: grow_later [mib (1..%d)] [compute_rounds]\n", MAX_MIB);
        return 2;
    }
    printf("start mib %llu compute_rounds %llu pages %lu\n", (unsigned long long)mib,
           (unsigned long long)rounds, pages());

    for (int i = 0; i < SMALL_WORDS; i++) {
        small[i] = (uint64_t)i * 0x9E3779B97F4A7C15ULL;
    }
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint64_t r = 1; r <= rounds; r++) {
        h = compute_round(h);
        printf("compute %llu hash %016llx\n", (unsigned long long)r, (unsigned long long)h);
    }

    for (uint64_t n = 0; n < mib; n++) {
        uint64_t *b = malloc(BLOCK);
        if (b == NULL) {
            printf("malloc failed at %llu MiB\n", (unsigned long long)n);
            return 1;
        }
        uint64_t seed = h + n * 0x2545F4914F6CDD1DULL;
        for (size_t i = 0; i < BLOCK_WORDS; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            b[i] = seed ^ (seed >> 33);
        }
        blocks[n] = b;
        uint64_t all = 0xcbf29ce484222325ULL;
        for (uint64_t k = 0; k <= n; k++) {
            all = stir_block(all, blocks[k], n);
            all = stir_block(all, blocks[k], k);
        }
        h ^= all;
        printf("grow %llu MiB pages %lu hash %016llx\n", (unsigned long long)(n + 1), pages(),
               (unsigned long long)all);
    }
    printf("done mib %llu pages %lu hash %016llx\n", (unsigned long long)mib, pages(),
           (unsigned long long)h);
    return 0;
}
