/*
 * sparse_writes — test guest for checkpoints of memory written a few pages
 * at a time: a large heap in which each pass changes a handful of words at
 * scattered places, so that each chunk a checkpoint finds changed holds one
 * or two written pages (the store keeps such chunks as deltas), some of
 * them in blocks that were all zero until then.
 *
 * Usage: sparse_writes [mib] [passes]
 *   mib     heap size in MiB, 1..512 (default 16)
 *   passes  number of passes (default 600)
 *
 * Callocs `mib` MiB and fills three 64 KiB blocks in four with a pattern
 * (every fourth stays zero). Each pass adds to 16 words at places drawn
 * from a fixed-seed LCG, prints `pass P hash HEX` (FNV-1a of the words
 * written) and, every 50th pass, `pass P heap HEX` (FNV-1a of the whole
 * heap), then sleeps 5 ms with ferry_sleep_ms. Ends with
 * `done passes P heap HEX` and exit 0. Output is deterministic.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ferry.h"
#include "args.h"

#define BLOCK_WORDS (65536 / 8)
#define WRITES_PER_PASS 16
#define SLEEP_MS 5

static uint64_t fnv(uint64_t h, uint64_t word) {
    for (int i = 0; i < 8; i++) {
        h ^= (word >> (8 * i)) & 0xff;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t heap_hash(const uint64_t *words, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h = fnv(h, words[i]);
    }
    return h;
}

int main(int argc, char **argv) {
    uint64_t mib = 16;
    uint64_t passes = 600;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u64(argv[1], &mib) != 0) || (argc > 2 && parse_u64(argv[2], &passes) != 0) ||
        mib < 1 || mib > 512) {
        fprintf(stderr, "usage: sparse_writes [mib 1..512] [passes]\n");
        return 2;
    }
    size_t n = (size_t)(mib << 20) / 8;
    uint64_t *words = calloc(n, 8);
    if (words == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if ((i / BLOCK_WORDS) % 4 != 3) {
            words[i] = i * 0x9e3779b97f4a7c15ULL;
        }
    }
    printf("heap %llu MiB filled heap %016llx\n", (unsigned long long)mib,
           (unsigned long long)heap_hash(words, n));

    uint64_t state = 0x2545f4914f6cdd1dULL;
    for (uint64_t pass = 1; pass <= passes; pass++) {
        uint64_t h = 0xcbf29ce484222325ULL;
        for (int w = 0; w < WRITES_PER_PASS; w++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t at = (size_t)((state >> 17) % n);
            words[at] += pass;
            h = fnv(h, words[at]);
        }
        printf("pass %llu hash %016llx\n", (unsigned long long)pass, (unsigned long long)h);
        if (pass % 50 == 0) {
            printf("pass %llu heap %016llx\n", (unsigned long long)pass,
                   (unsigned long long)heap_hash(words, n));
        }
        ferry_sleep_ms(SLEEP_MS);
    }
    printf("done passes %llu heap %016llx\n", (unsigned long long)passes,
           (unsigned long long)heap_hash(words, n));
    free(words);
    return 0;
}
