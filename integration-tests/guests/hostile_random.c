/*
 * hostile_random — test guest: random_get with lengths and pointers outside
 * its memory, the review's `random_get(16, 0xFFFFFF00)` six times among
 * them, then one honest call. Prints `CALL = ERRNO` per call (21 is EFAULT)
 * and `memory_bytes=N` last. The hub must answer EFAULT without allocating
 * what the guest asked for.
 *
 * Usage: hostile_random   (no arguments)
 */
#include <stdio.h>

#include "wasi_raw.h"

static uint8_t buffer[1 << 20];

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint32_t end = memory_end();

    for (int i = 0; i < 6; i++) {
        printf("random_get(16, 0xffffff00) = %d\n", (int)raw_random_get(16, (int32_t)0xFFFFFF00u));
    }
    printf("random_get(end - 8, 16) = %d\n", (int)raw_random_get((int32_t)(end - 8), 16));
    printf("random_get(0xfffffff0, 32) = %d\n", (int)raw_random_get((int32_t)0xFFFFFFF0u, 32));
    printf("random_get(0, end + 1) = %d\n", (int)raw_random_get(0, (int32_t)(end + 1)));

    int rc = (int)raw_random_get(ADDR(buffer), (int32_t)sizeof buffer);
    size_t nonzero = 0;
    for (size_t i = 0; i < sizeof buffer; i++) {
        nonzero += buffer[i] != 0;
    }
    printf("random_get(buffer, 1 MiB) = %d %s\n", rc, nonzero > sizeof buffer / 2 ? "random" : "not random");
    printf("memory_bytes=%u\n", (unsigned)memory_end());
    return 0;
}
