/*
 * primes — CPU-bound: counts primes below a limit by trial division.
 *
 * Usage: primes [limit] [report_every]
 *   limit         count primes p < limit (default 50000000)
 *   report_every  print progress every this many numbers (default 2500000;
 *                 0 = no progress lines)
 *
 * Prints `primes below X: COUNT` each time X reaches a multiple of
 * report_every, then `done: COUNT primes below LIMIT`. Output is
 * deterministic. It never sleeps or calls the host: it exists to be
 * preempted and migrated in the middle of a hot loop. At the defaults it
 * runs for several seconds.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int parse_u32(const char *s, uint32_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > UINT32_MAX) {
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* Odd primes up to sqrt(UINT32_MAX) < 65536: fewer than 6542 of them. */
static uint32_t divisors[6542];
static uint32_t ndivisors;

/* n is odd and >= 3; divisors holds every odd prime p with p*p <= n. */
static int is_prime_odd(uint32_t n) {
    for (uint32_t i = 0; i < ndivisors; i++) {
        uint32_t p = divisors[i];
        if ((uint64_t)p * p > n) {
            return 1;
        }
        if (n % p == 0) {
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv) {
    uint32_t limit = 50000000;
    uint32_t report_every = 2500000;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u32(argv[1], &limit) != 0) ||
        (argc > 2 && parse_u32(argv[2], &report_every) != 0) || argc > 3) {
        fprintf(stderr, "usage: primes [limit] [report_every]\n");
        return 2;
    }

    uint64_t count = 0; /* primes p < x, where x is the next number to test */
    for (uint64_t x = 0; x < limit; x++) {
        if (report_every != 0 && x != 0 && x % report_every == 0) {
            printf("primes below %llu: %llu\n", (unsigned long long)x,
                   (unsigned long long)count);
        }
        uint32_t n = (uint32_t)x;
        int prime;
        if (n < 2) {
            prime = 0;
        } else if (n == 2) {
            prime = 1;
        } else if (n % 2 == 0) {
            prime = 0;
        } else {
            prime = is_prime_odd(n);
            /* Keep every odd prime that may divide a later n < 2^32. */
            if (prime && n < 65536) {
                divisors[ndivisors++] = n;
            }
        }
        count += (uint64_t)prime;
    }
    printf("done: %llu primes below %llu\n", (unsigned long long)count,
           (unsigned long long)limit);
    return 0;
}
