/*
 * bigheap — keeps a large, changing heap: a test load for memory snapshots.
 *
 * Usage: bigheap [mib] [rounds]
 *   mib     heap size in MiB (default 32)
 *   rounds  number of rounds, 0 = forever (default 0)
 *
 * Mallocs `mib` MiB, fills it with a deterministic pattern and prints
 * `heap MIB MiB filled`. Then each round overwrites 4096 pseudo-random words
 * (an LCG with a fixed seed), prints `round N checksum HEX` (a 64-bit
 * FNV-1a hash of the whole heap, 16 hex digits) and sleeps 100 ms with
 * ferry_sleep_ms. Output is deterministic, so a run that
 * was migrated or suspended mid-way must print exactly what an undisturbed
 * run prints.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ferry.h"
#include "args.h"

#define WRITES_PER_ROUND 4096
#define SLEEP_MS 100

static uint64_t lcg_state = 0x2545F4914F6CDD1DULL;

/* Knuth's MMIX LCG; the high 32 bits are the output. */
static uint32_t lcg_next(void) {
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(lcg_state >> 32);
}

static uint64_t checksum(const uint32_t *words, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= words[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int main(int argc, char **argv) {
    uint64_t mib = 32;
    uint64_t rounds = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u64(argv[1], &mib) != 0) ||
        (argc > 2 && parse_u64(argv[2], &rounds) != 0) || argc > 3 || mib == 0 ||
        mib > 4095) {
        fprintf(stderr, "usage: bigheap [mib (1..4095)] [rounds]\n");
        return 2;
    }

    size_t nwords = (size_t)(mib * 1024 * 1024 / sizeof(uint32_t));
    uint32_t *heap = malloc(nwords * sizeof(uint32_t));
    if (heap == NULL) {
        fprintf(stderr, "bigheap: cannot allocate %llu MiB\n", (unsigned long long)mib);
        return 1;
    }
    for (size_t i = 0; i < nwords; i++) {
        heap[i] = (uint32_t)i * 0x9E3779B1u;
    }
    printf("heap %llu MiB filled\n", (unsigned long long)mib);

    for (uint64_t round = 1; rounds == 0 || round <= rounds; round++) {
        for (int k = 0; k < WRITES_PER_ROUND; k++) {
            size_t pos = (size_t)(lcg_next() % nwords);
            heap[pos] = lcg_next();
        }
        printf("round %llu checksum %016llx\n", (unsigned long long)round,
               (unsigned long long)checksum(heap, nwords));
        fflush(stdout);
        if (rounds != 0 && round == rounds) {
            break;
        }
        ferry_sleep_ms(SLEEP_MS);
    }
    return 0;
}
