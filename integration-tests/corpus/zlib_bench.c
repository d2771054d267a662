/*
 * zlib_bench — zlib (as the libz-sys crate bundles it) deflating and
 * inflating generated text-like data at several levels, with CRC-32 and
 * Adler-32 over the results.
 *
 * Usage: zlib_bench [rounds=6] [mib=4]
 *
 * Prints `round N level L compressed B checksum C` per round and
 * `zlib done checksum C`; exits non-zero if a round trip differs.
 */
#include <stdio.h>
#include <stdlib.h>

#include "compress_data.h"
#include "zlib.h"

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 6;
  uLong size = (uLong)(argc > 2 ? atoi(argv[2]) : 4) << 20;
  unsigned char *input = malloc(size);
  uLong bound = compressBound(size);
  unsigned char *compressed = malloc(bound);
  unsigned char *output = malloc(size);
  if (!input || !compressed || !output) return 1;
  fill_data(input, size);
  uint64_t checksum = 1469598103934665603ull;
  static const int levels[] = {6, 1, 9, 3, 6, 5};
  for (int round = 1; round <= rounds; round++) {
    int level = levels[(round - 1) % 6];
    uLongf n = bound;
    if (compress2(compressed, &n, input, size, level) != Z_OK) { fprintf(stderr, "zlib_bench: compress\n"); return 1; }
    uLongf m = size;
    if (uncompress(output, &m, compressed, n) != Z_OK || m != size || memcmp(input, output, size) != 0) {
      fprintf(stderr, "zlib_bench: round trip differs in round %d\n", round);
      return 1;
    }
    uLong crc = crc32(0L, compressed, (uInt)n);
    uLong adler = adler32(1L, output, (uInt)m);
    checksum = fnv1a(checksum, compressed, n) ^ ((uint64_t)crc << 32 | adler);
    printf("round %d level %d compressed %lu checksum %016llx\n", round, level, (unsigned long)n,
           (unsigned long long)checksum);
    fflush(stdout);
    for (uLong i = (uLong)round; i < size; i += 4093) input[i] ^= (unsigned char)round;
  }
  printf("zlib done checksum %016llx\n", (unsigned long long)checksum);
  return 0;
}
