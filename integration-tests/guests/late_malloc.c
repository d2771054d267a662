/*
 * late_malloc — test guest whose FIRST malloc comes after a long compute
 * phase, i.e. normally after the first checkpoint. wasi-libc's malloc takes
 * the memory between __heap_base and the end of linear memory on its first
 * call, so anything a host put into (or grew) guest memory before that call
 * would be handed out as heap.
 *
 * Usage: late_malloc [compute_rounds] [heap_rounds]
 *   compute_rounds  phase 1 rounds of ~0.1 s, no malloc (default 10)
 *   heap_rounds     phase 2 rounds of ~0.06 s with the heap (default 20)
 *
 * Phase 1 uses static memory only. Phase 2 mallocs 8 MiB, then each round
 * mallocs 50000 small blocks (16..255 bytes) linked into a list, reallocs
 * some, frees about a quarter of all live ones and hashes the live blocks and
 * a 1 MiB slice of the big block.
 *
 * Output, all deterministic:
 *   start compute_rounds C heap_rounds R pages P
 *   compute N hash HHHHHHHHHHHHHHHH                  (phase 1, one per round)
 *   first malloc 8 MiB at 0xADDR pages P
 *   heap N live L bytes B hash HHHHHHHHHHHHHHHH      (phase 2, one per round)
 *   done live L bytes B pages P hash HHHHHHHHHHHHHHHH (then exit 0)
 * P is memory.size in 64 KiB pages, ADDR the big block's address: both
 * depend only on the program, so a restore must reproduce them.
 *
 * How "no malloc before phase 2" is ensured, and how it was checked:
 * - main takes no arguments, so clang-14 emits it as __original_main and
 *   wasi-libc's _start calls it directly: the argv set-up that mallocs
 *   (__main_argc_argv) is not linked. Arguments are read with the raw WASI
 *   calls into static buffers instead. No constructors are linked
 *   (no __wasm_call_ctors, no preopen table).
 * - stdout gets a static buffer via setvbuf before the first printf.
 * - Checked on the built module: a call graph from `llvm-objdump-14 -d`
 *   (direct `call`s, plus every call_indirect taken to reach every function
 *   in the table, read from the ELEM section) shows that only malloc,
 *   dlmalloc, realloc, free, sbrk, heap_phase, __original_main and _start
 *   can reach malloc/realloc/free/sbrk. The table holds only __stdio_close,
 *   __stdio_write, __stdio_seek and __stdout_write. setvbuf, read_args,
 *   printf/vfprintf, fwrite and compute_phase cannot reach them, and
 *   __original_main calls setvbuf, read_args, fwrite (usage), printf,
 *   compute_phase and only then heap_phase, whose first call is malloc.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

#define BIG (8u * 1024 * 1024)
#define SLICE (1024 * 1024)
#define SMALL_PER_ROUND 50000
#define ROUND_ITERS 600000
#define STATIC_WORDS 512

struct node {
    struct node *next;
    uint32_t size; /* bytes of data[] */
    uint32_t seed;
    uint8_t data[];
};

static char stdout_buf[4096];
static uint64_t words[STATIC_WORDS];
static uint8_t arg_buf[1024];
static uint8_t *arg_ptrs[16];
static unsigned long arg_vals[2] = {10, 20};

/* Reads up to two decimal arguments into arg_vals; -1 on bad usage. */
static __attribute__((noinline)) int read_args(void) {
    __wasi_size_t argc, size;
    if (__wasi_args_sizes_get(&argc, &size) != 0 || argc > 3 || size > sizeof arg_buf) {
        return -1;
    }
    if (__wasi_args_get(arg_ptrs, arg_buf) != 0) {
        return -1;
    }
    for (__wasi_size_t i = 1; i < argc; i++) {
        const char *s = (const char *)arg_ptrs[i];
        unsigned long v = 0;
        if (*s == '\0' || strlen(s) > 9) {
            return -1;
        }
        for (; *s; s++) {
            if (*s < '0' || *s > '9') {
                return -1;
            }
            v = v * 10 + (unsigned long)(*s - '0');
        }
        arg_vals[i - 1] = v;
    }
    return 0;
}

static unsigned long pages(void) {
    return (unsigned long)__builtin_wasm_memory_size(0);
}

static __attribute__((noinline)) uint64_t compute_phase(unsigned long rounds) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < STATIC_WORDS; i++) {
        words[i] = (uint64_t)i * 0x9E3779B97F4A7C15ULL;
    }
    for (unsigned long r = 1; r <= rounds; r++) {
        for (int it = 0; it < ROUND_ITERS; it++) {
            for (int i = 0; i < STATIC_WORDS; i += 8) {
                uint64_t v = words[i] ^ h;
                v ^= v >> 29;
                v *= 0xBF58476D1CE4E5B9ULL;
                words[i] = v;
                h = (h + v) * 0x100000001B3ULL;
            }
            h ^= (uint64_t)it;
        }
        printf("compute %lu hash %016llx\n", r, (unsigned long long)h);
    }
    return h;
}

static uint32_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 32);
}

static void fill(struct node *n) {
    uint32_t x = n->seed;
    for (uint32_t i = 0; i < n->size; i++) {
        x = x * 1103515245u + 12345u;
        n->data[i] = (uint8_t)(x >> 24);
    }
}

static __attribute__((noinline)) int heap_phase(unsigned long rounds, uint64_t h) {
    uint8_t *big = malloc(BIG); /* the program's first malloc */
    if (big == NULL) {
        printf("malloc of 8 MiB failed\n");
        return 1;
    }
    printf("first malloc 8 MiB at 0x%lx pages %lu\n", (unsigned long)(uintptr_t)big, pages());
    for (uint32_t i = 0; i < BIG; i++) {
        big[i] = (uint8_t)((i * 2654435761u) >> 24);
    }

    uint64_t rng = h;
    struct node *head = NULL;
    unsigned long live = 0, bytes = 0;
    for (unsigned long r = 1; r <= rounds; r++) {
        for (int k = 0; k < SMALL_PER_ROUND; k++) {
            uint32_t size = 16 + lcg(&rng) % 240;
            struct node *n = malloc(sizeof *n + size);
            if (n == NULL) {
                printf("small malloc failed in round %lu\n", r);
                return 1;
            }
            n->size = size;
            n->seed = lcg(&rng);
            fill(n);
            n->next = head;
            head = n;
            live++;
            bytes += size;
        }
        /* Walk all live blocks: free about 1/4, grow about 1/8, hash the rest. */
        uint64_t hash = 0xcbf29ce484222325ULL ^ r;
        struct node **link = &head;
        while (*link != NULL) {
            struct node *n = *link;
            uint32_t pick = lcg(&rng);
            if ((pick & 3) == 0) {
                *link = n->next;
                live--;
                bytes -= n->size;
                free(n);
                continue;
            }
            if ((pick & 7) == 1 && n->size < 1024) {
                uint32_t grown = n->size + 64;
                struct node *m = realloc(n, sizeof *m + grown);
                if (m == NULL) {
                    printf("realloc failed in round %lu\n", r);
                    return 1;
                }
                memset(m->data + m->size, (int)(pick >> 24), 64);
                bytes += 64;
                m->size = grown;
                *link = n = m;
            }
            for (uint32_t i = 0; i < n->size; i++) {
                hash = (hash ^ n->data[i]) * 0x100000001B3ULL;
            }
            link = &n->next;
        }
        /* Mutate and hash a rotating 1 MiB slice of the big block. */
        uint8_t *slice = big + (r % (BIG / SLICE)) * SLICE;
        for (uint32_t i = 0; i < SLICE; i++) {
            slice[i] = (uint8_t)(slice[i] * 5u + (uint8_t)r);
            hash = (hash ^ slice[i]) * 0x100000001B3ULL;
        }
        h ^= hash;
        printf("heap %lu live %lu bytes %lu hash %016llx\n", r, live, bytes,
               (unsigned long long)hash);
    }
    printf("done live %lu bytes %lu pages %lu hash %016llx\n", live, bytes, pages(),
           (unsigned long long)h);
    return 0;
}

int main(void) {
    setvbuf(stdout, stdout_buf, _IOLBF, sizeof stdout_buf);
    if (read_args() != 0) {
        fprintf(stderr, "usage: late_malloc [compute_rounds] [heap_rounds]\n");
        return 2;
    }
    printf("start compute_rounds %lu heap_rounds %lu pages %lu\n", arg_vals[0], arg_vals[1],
           pages());
    uint64_t h = compute_phase(arg_vals[0]);
    return heap_phase(arg_vals[1], h);
}
