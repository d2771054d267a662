/*
 * hotheap — a large heap with a small hot set: most of the memory is
 * written once, a small region is rewritten all the time. The typical shape
 * of a long-lived service (caches and tables that settle, counters and
 * buffers that churn), and the load the live-migration downtime benchmark
 * uses.
 *
 * Usage: hotheap [mib] [hot_kib] [rounds] [fill]
 *   mib      heap size in MiB, 1..4095 (default 64)
 *   hot_kib  size of the hot region in KiB, 4..mib*1024 (default 256)
 *   rounds   number of rounds, 0 = forever (default 0)
 *   fill     `words` (default): every 32-bit word a multiple of a large odd
 *            constant, which no compressor shrinks; `records`: lines of
 *            text like a service's table or log kept in memory
 *            (`id=00001234 sensor=17 temp=+21.5 status=ok`), which
 *            compress like real data
 *
 * Mallocs `mib` MiB, fills it with a deterministic pattern and prints
 * `heap MIB MiB filled hot KIB KiB`. Then each round rewrites every word of
 * the hot region (a function of the round number), prints
 * `round N checksum HEX` (a 64-bit FNV-1a hash of the hot region, 16 hex
 * digits) and sleeps 10 ms with ferry_sleep_ms. Output is deterministic.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"
#include "args.h"

#define SLEEP_MS 10

/* Fills `bytes` with lines of text made from a deterministic sequence. */
static void fill_records(char *bytes, size_t len) {
    static const char *const status[] = {"ok", "ok", "ok", "warn", "ok", "retry"};
    uint32_t state = 12345;
    size_t at = 0;
    for (uint32_t id = 0; at < len; id++) {
        char line[80];
        state = state * 1103515245u + 12345u;
        unsigned sensor = (state >> 16) % 64;
        int tenths = (int)((state >> 8) % 600) - 100;
        int n = snprintf(line, sizeof line, "id=%08u sensor=%02u temp=%+04d.%d status=%s\n", id, sensor,
                         tenths / 10, abs(tenths % 10), status[(state >> 4) % 6]);
        for (int i = 0; i < n && at < len; i++) {
            bytes[at++] = line[i];
        }
    }
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
    uint64_t mib = 64;
    uint64_t hot_kib = 256;
    uint64_t rounds = 0;
    int records = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u64(argv[1], &mib) != 0) ||
        (argc > 2 && parse_u64(argv[2], &hot_kib) != 0) ||
        (argc > 3 && parse_u64(argv[3], &rounds) != 0) || argc > 5 || mib == 0 || mib > 4095 ||
        hot_kib < 4 || hot_kib > mib * 1024) {
        fprintf(stderr, "usage: hotheap [mib (1..4095)] [hot_kib (4..mib*1024)] [rounds] [words|records]\n");
        return 2;
    }
    if (argc > 4) {
        if (strcmp(argv[4], "records") == 0) {
            records = 1;
        } else if (strcmp(argv[4], "words") != 0) {
            fprintf(stderr, "hotheap: fill is words or records, not %s\n", argv[4]);
            return 2;
        }
    }

    size_t nwords = (size_t)(mib * 1024 * 1024 / sizeof(uint32_t));
    size_t hot_words = (size_t)(hot_kib * 1024 / sizeof(uint32_t));
    uint32_t *heap = malloc(nwords * sizeof(uint32_t));
    if (heap == NULL) {
        fprintf(stderr, "hotheap: cannot allocate %llu MiB\n", (unsigned long long)mib);
        return 1;
    }
    if (records) {
        fill_records((char *)heap, nwords * sizeof(uint32_t));
    } else {
        for (size_t i = 0; i < nwords; i++) {
            heap[i] = (uint32_t)i * 0x9E3779B1u;
        }
    }
    printf("heap %llu MiB filled hot %llu KiB\n", (unsigned long long)mib, (unsigned long long)hot_kib);

    /* The hot region sits in the middle of the heap. */
    uint32_t *hot = heap + (nwords - hot_words) / 2;
    for (uint64_t round = 1; rounds == 0 || round <= rounds; round++) {
        for (size_t i = 0; i < hot_words; i++) {
            hot[i] = hot[i] * 0x01000193u + (uint32_t)round;
        }
        printf("round %llu checksum %016llx\n", (unsigned long long)round,
               (unsigned long long)checksum(hot, hot_words));
        ferry_sleep_ms(SLEEP_MS);
    }
    free(heap);
    return 0;
}
