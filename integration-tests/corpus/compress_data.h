/*
 * Shared by the compression benchmarks: deterministic, partly compressible
 * input (words, numbers and noise) and a checksum.
 */
#ifndef COMPRESS_DATA_H
#define COMPRESS_DATA_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static uint64_t data_prng_state = 0x2545F4914F6CDD1Dull;
static uint32_t data_prng(void) {
  data_prng_state ^= data_prng_state << 13;
  data_prng_state ^= data_prng_state >> 7;
  data_prng_state ^= data_prng_state << 17;
  return (uint32_t)(data_prng_state >> 16);
}

/* Fills `buffer` with text-like data that compresses about 3:1. */
static void fill_data(unsigned char *buffer, size_t size) {
  static const char *const words[] = {"ferry ", "harbor ", "wave ", "tide ", "anchor ", "hull ",
                                      "rope ", "deck ", "sail ", "mast ", "keel ", "port "};
  size_t at = 0;
  while (at < size) {
    uint32_t r = data_prng();
    const char *piece;
    char number[16];
    switch (r % 8) {
      case 0: {
        int n = 0;
        uint32_t v = r >> 8;
        do { number[n++] = (char)('0' + v % 10); v /= 10; } while (v && n < 15);
        number[n++] = ' ';
        number[n] = 0;
        piece = number;
        break;
      }
      case 1:
        number[0] = (char)(r >> 8);
        number[1] = (char)(r >> 16);
        number[2] = (char)(r >> 24);
        number[3] = 0;
        piece = number;
        break;
      default:
        piece = words[(r >> 4) % 12];
    }
    size_t length = strlen(piece);
    if (length == 0) length = 1;
    if (at + length > size) length = size - at;
    memcpy(buffer + at, piece, length);
    at += length;
  }
}

static uint64_t fnv1a(uint64_t hash, const unsigned char *bytes, size_t n) {
  for (size_t i = 0; i < n; i++) {
    hash ^= bytes[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

#endif
