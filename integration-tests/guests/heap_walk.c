/*
 * heap_walk — test guest for a CPU loop over a large heap: pointer chasing
 * with in-place mutation of both data and links.
 *
 * Usage: heap_walk [mib] [passes]
 *   mib     heap size in MiB, 1..1024 (default 24)
 *   passes  number of passes (default 25)
 *
 * Mallocs `mib` MiB of 16-byte nodes {next, id, val} and links them into one
 * random cycle (Sattolo's shuffle with a fixed-seed LCG). Each pass follows
 * `next` pointers for 7/8 of the cycle's length, rewriting each
 * visited node's val and, every 64th step, swapping the order of the next two
 * nodes (a->b->c becomes a->c->b, so the cycle stays one cycle).
 *
 * Output, all deterministic:
 *   heap M MiB nodes N filled hash HHHHHHHHHHHHHHHH
 *   pass P at ID hash HHHHHHHHHHHHHHHH                (one per pass)
 *   done passes P cycle N hash HHHHHHHHHHHHHHHH        (then exit 0)
 * ID is the id of the node where the pass ended; `cycle N` is the length of
 * the cycle through node 0 at the end (always the node count); HEX is 16 hex
 * digits.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "args.h"

struct node {
    struct node *next;
    uint32_t id;
    uint64_t val;
};

_Static_assert(sizeof(struct node) == 16, "node is 16 bytes on wasm32");

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint32_t lcg(void) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng >> 32);
}

int main(int argc, char **argv) {
    uint64_t mib = 24, passes = 25;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u64(argv[1], &mib) != 0) ||
        (argc > 2 && parse_u64(argv[2], &passes) != 0) || argc > 3 || mib < 1 || mib > 1024) {
        fprintf(stderr, "usage: heap_walk [mib (1..1024)] [passes]\n");
        return 2;
    }
    uint32_t n = (uint32_t)(mib * 1024 * 1024 / sizeof(struct node));
    struct node *nodes = malloc((size_t)n * sizeof(struct node));
    if (nodes == NULL) {
        fprintf(stderr, "heap_walk: cannot allocate %llu MiB\n", (unsigned long long)mib);
        return 1;
    }

    /* Sattolo: id[] becomes a cyclic permutation, then next = &nodes[id]. */
    for (uint32_t i = 0; i < n; i++) {
        nodes[i].id = i;
    }
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = lcg() % i;
        uint32_t t = nodes[i].id;
        nodes[i].id = nodes[j].id;
        nodes[j].id = t;
    }
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint32_t i = 0; i < n; i++) {
        nodes[i].next = &nodes[nodes[i].id];
        nodes[i].id = i;
        nodes[i].val = (uint64_t)i * 0xBF58476D1CE4E5B9ULL ^ lcg();
        h = (h ^ nodes[i].val) * 0x100000001B3ULL;
    }
    printf("heap %llu MiB nodes %lu filled hash %016llx\n", (unsigned long long)mib,
           (unsigned long)n, (unsigned long long)h);

    struct node *p = &nodes[0];
    for (uint64_t pass = 1; pass <= passes; pass++) {
        for (uint32_t step = 0; step < n - n / 8; step++) {
            uint64_t v = (p->val ^ (p->val >> 29)) * 0x94D049BB133111EBULL + pass;
            p->val = v;
            h = (h ^ v ^ p->id) * 0x100000001B3ULL;
            if ((step & 63) == 0) {
                struct node *b = p->next, *c = b->next;
                if (b != p && c != p) { /* needs a cycle of at least 3 */
                    p->next = c;
                    b->next = c->next;
                    c->next = b;
                }
            }
            p = p->next;
        }
        printf("pass %llu at %lu hash %016llx\n", (unsigned long long)pass, (unsigned long)p->id,
               (unsigned long long)h);
    }

    uint32_t cycle = 0;
    struct node *q = &nodes[0];
    do {
        q = q->next;
        cycle++;
    } while (q != &nodes[0] && cycle <= n);
    printf("done passes %llu cycle %lu hash %016llx\n", (unsigned long long)passes,
           (unsigned long)cycle, (unsigned long long)h);
    return 0;
}
