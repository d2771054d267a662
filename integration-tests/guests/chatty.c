/*
 * chatty — writes big blocks of output, then ticks.
 *
 * Usage: chatty [blocks] [block_kib]
 *   blocks     blocks written at once at start (default 400)
 *   block_kib  size of each block in KiB (default 64)
 *
 * Each block is `block N ` followed by dots up to block_kib KiB, ending in
 * a newline, written with one write(2). Then it prints `tick N` every
 * 50 ms, forever (ferry_sleep_ms). A hub keeps a bounded part of this.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ferry.h"
#include "args.h"

static char block[1 << 20];

int main(int argc, char **argv) {
    uint64_t blocks = 400;
    uint64_t block_kib = 64;
    if ((argc > 1 && parse_u64(argv[1], &blocks) != 0) ||
        (argc > 2 && parse_u64(argv[2], &block_kib) != 0) || argc > 3 || block_kib == 0 ||
        block_kib > sizeof block / 1024) {
        fprintf(stderr, "usage: chatty [blocks] [block_kib (1..1024)]\n");
        return 2;
    }
    size_t size = (size_t)block_kib * 1024;
    memset(block, '.', size);
    block[size - 1] = '\n';
    for (uint64_t n = 1; n <= blocks; n++) {
        int head = snprintf(block, 32, "block %llu ", (unsigned long long)n);
        block[head] = '.';
        if (write(1, block, size) != (ssize_t)size) {
            return 1;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (uint64_t n = 1;; n++) {
        printf("tick %llu\n", (unsigned long long)n);
        ferry_sleep_ms(50);
    }
}
