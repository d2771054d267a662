/*
 * hostile_writev — test guest: fd_write with many iovecs over one 32 MiB
 * buffer (64, IOV_MAX = 1024 and 4096 of them: 2 GiB, 32 GiB and 128 GiB
 * asked for), the 1024 case eight times. The buffer holds lines of 63 dots.
 * Prints `fd_write(...) = ERRNO nwritten=N` per call (28 is EINVAL), then
 * writes 256 KiB through stdio (which must retry short writes until all is
 * written), and `memory_bytes=N` last.
 *
 * Usage: hostile_writev   (no arguments)
 */
#include <stdio.h>
#include <string.h>

#include "wasi_raw.h"

#define BUFFER_BYTES (32u << 20)
#define MOST_IOVECS 4096

static char buffer[BUFFER_BYTES];
static struct raw_iovec iovecs[MOST_IOVECS];

static void write_iovecs(int count) {
    for (int i = 0; i < count; i++) {
        iovecs[i].buf = ADDR(buffer);
        iovecs[i].len = (int32_t)BUFFER_BYTES;
    }
    uint32_t nwritten = 0;
    int rc = (int)raw_fd_write(1, ADDR(iovecs), count, ADDR(&nwritten));
    printf("fd_write(1, %d iovecs of 32 MiB) = %d nwritten=%u\n", count, rc, (unsigned)nwritten);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t line = 0; line < BUFFER_BYTES / 64; line++) {
        memset(buffer + line * 64, '.', 63);
        buffer[line * 64 + 63] = '\n';
    }

    write_iovecs(64);
    for (int round = 0; round < 8; round++) {
        write_iovecs(1024);
    }
    write_iovecs(MOST_IOVECS);

    size_t written = fwrite(buffer, 1, 256u << 10, stdout);
    fflush(stdout);
    printf("fwrite(256 KiB) = %zu\n", written);
    printf("memory_bytes=%u\n", (unsigned)memory_end());
    return 0;
}
