/*
 * zstd_bench — zstd (as the zstd-sys crate bundles it) compressing and
 * decompressing generated text-like data at several levels.
 *
 * Usage: zstd_bench [rounds=6] [mib=8]
 *
 * Prints `round N level L compressed B checksum C` per round and
 * `zstd done checksum C`; exits non-zero if a round trip differs.
 */
#include <stdio.h>
#include <stdlib.h>

#include "compress_data.h"
#include "zstd.h"

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 6;
  size_t size = (size_t)(argc > 2 ? atoi(argv[2]) : 8) << 20;
  unsigned char *input = malloc(size);
  size_t bound = ZSTD_compressBound(size);
  unsigned char *compressed = malloc(bound);
  unsigned char *output = malloc(size);
  if (!input || !compressed || !output) return 1;
  fill_data(input, size);
  uint64_t checksum = 1469598103934665603ull;
  static const int levels[] = {1, 3, 5, 2, 4, 6};
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  ZSTD_DCtx *dctx = ZSTD_createDCtx();
  for (int round = 1; round <= rounds; round++) {
    int level = levels[(round - 1) % 6];
    size_t n = ZSTD_compressCCtx(cctx, compressed, bound, input, size, level);
    if (ZSTD_isError(n)) { fprintf(stderr, "zstd_bench: %s\n", ZSTD_getErrorName(n)); return 1; }
    size_t m = ZSTD_decompressDCtx(dctx, output, size, compressed, n);
    if (ZSTD_isError(m) || m != size || memcmp(input, output, size) != 0) {
      fprintf(stderr, "zstd_bench: round trip differs in round %d\n", round);
      return 1;
    }
    checksum = fnv1a(checksum, compressed, n);
    printf("round %d level %d compressed %zu checksum %016llx\n", round, level, n, (unsigned long long)checksum);
    fflush(stdout);
    /* The next round compresses slightly different data. */
    for (size_t i = round; i < size; i += 4093) input[i] ^= (unsigned char)round;
  }
  printf("zstd done checksum %016llx\n", (unsigned long long)checksum);
  ZSTD_freeCCtx(cctx);
  ZSTD_freeDCtx(dctx);
  return 0;
}
