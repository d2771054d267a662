/*
 * args.h — reading the numbers a guest takes as arguments.
 */
#ifndef FERRY_ARGS_H
#define FERRY_ARGS_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* Parses `s` as a whole non-negative decimal number into `*out`: 0, or -1
 * (and `*out` untouched) for anything else — empty, signed, trailing
 * characters, or past 2^64 - 1. */
static inline int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

#endif
