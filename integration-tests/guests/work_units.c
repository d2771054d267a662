/*
 * work_units — CPU-bound work in equal units, for measuring progress rates.
 *
 * Usage: work_units [units] [iterations_per_unit]
 *   units                 how many units to do (default 1000; 0 = forever)
 *   iterations_per_unit   rounds of a 64-bit mixing function per unit
 *                         (default 2000000)
 *
 * Prints `unit N checksum C` after each unit, then `done: N units`. Every
 * unit costs the same CPU, so units per second measure how much CPU the
 * function gets. Output is deterministic; it never sleeps or calls the host
 * between units except to print.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "args.h"

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

int main(int argc, char **argv) {
    uint64_t units = 1000;
    uint64_t iterations = 2000000;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if ((argc > 1 && parse_u64(argv[1], &units) != 0) ||
        (argc > 2 && parse_u64(argv[2], &iterations) != 0) || argc > 3) {
        fprintf(stderr, "usage: work_units [units] [iterations_per_unit]\n");
        return 2;
    }
    uint64_t state = 0x9e3779b97f4a7c15ULL;
    for (uint64_t unit = 1; units == 0 || unit <= units; unit++) {
        for (uint64_t i = 0; i < iterations; i++) {
            state = mix(state + i);
        }
        printf("unit %llu checksum %016llx\n", (unsigned long long)unit, (unsigned long long)state);
    }
    printf("done: %llu units\n", (unsigned long long)units);
    return 0;
}
