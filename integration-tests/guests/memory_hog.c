/*
 * memory_hog — test guest: allocates 1 MiB blocks (and writes to them) until
 * malloc returns NULL, printing `allocated N MiB` after each block. Then
 * prints `malloc failed at N MiB` (N = MiB held when the next block failed)
 * and exits with code 3. Used to check the hub's per-function memory limit:
 * memory.grow must fail cleanly inside the guest, not kill the hub.
 *
 * Usage: memory_hog   (no arguments)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK (1024 * 1024)

/* Every block is linked into this list. Without a visible use the compiler
 * is allowed to delete malloc+memset of a never-read block and assume the
 * result is non-NULL, which turns the loop into an endless print loop. */
static void *volatile blocks;

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);

    unsigned long mib = 0;
    for (;;) {
        char *block = malloc(BLOCK);
        if (block == NULL) {
            break;
        }
        memset(block, (int)(mib & 0xff) | 1, BLOCK);
        *(void **)block = blocks;
        blocks = block;
        mib++;
        printf("allocated %lu MiB\n", mib);
    }
    printf("malloc failed at %lu MiB\n", mib);
    return 3;
}
