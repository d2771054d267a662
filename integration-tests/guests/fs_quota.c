/*
 * fs_quota — test guest: fills its volume up to the quota.
 *
 * Usage: fs_quota DIR BYTES_PER_WRITE [MAX_BYTES]
 *   DIR              a writable preopen (e.g. /data)
 *   BYTES_PER_WRITE  the size of each write
 *   MAX_BYTES        stop there if no write has failed yet (default 1 GiB;
 *                    a guard for runtimes without a quota)
 *
 * Writes DIR/quota.bin in chunks until a write fails, then prints
 *   wrote N bytes then errno E      (E: 51 ENOSPC, or 19 EDQUOT)
 * or `wrote N bytes, no error up to MAX_BYTES`, then `file size: ok` if the
 * file holds exactly the N bytes written. Deletes the file, checks that a new
 * 4096-byte file can be written (`after delete: ok`) and removes it too, and
 * prints `fs_quota done`. Exits 0 if the writes stopped with ENOSPC or EDQUOT
 * and the write after the delete succeeded, 1 otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_file(const char *path, const char *buf, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    ssize_t n = write(fd, buf, len);
    int err = errno;
    int closed = close(fd);
    errno = err;
    return n == (ssize_t)len && closed == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3 || argc > 4 || atoll(argv[2]) <= 0) {
        fprintf(stderr, "usage: fs_quota DIR BYTES_PER_WRITE [MAX_BYTES]\n");
        return 2;
    }
    size_t chunk = (size_t)atoll(argv[2]);
    long long max = argc == 4 ? atoll(argv[3]) : 1LL << 30;
    char *buf = malloc(chunk);
    if (buf == NULL) {
        fprintf(stderr, "fs_quota: cannot allocate %zu bytes\n", chunk);
        return 2;
    }
    for (size_t i = 0; i < chunk; i++) buf[i] = (char)('a' + i % 26);

    char path[512], after[512];
    snprintf(path, sizeof path, "%s/quota.bin", argv[1]);
    snprintf(after, sizeof after, "%s/quota_after.bin", argv[1]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        printf("open %s: errno %d\n", path, errno);
        return 1;
    }
    long long total = 0;
    int err = 0;
    while (total < max) {
        size_t want = (long long)chunk < max - total ? chunk : (size_t)(max - total);
        ssize_t n = write(fd, buf, want);
        if (n < 0) {
            err = errno;
            break;
        }
        if (n == 0) {
            err = -1;
            break;
        }
        total += n; /* a short write is followed by one that fails */
    }
    if (err > 0) printf("wrote %lld bytes then errno %d\n", total, err);
    else if (err < 0) printf("wrote %lld bytes then a write of 0 bytes\n", total);
    else printf("wrote %lld bytes, no error up to MAX_BYTES\n", total);
    struct stat st;
    int sized = fstat(fd, &st) == 0 && st.st_size == total;
    printf("file size: %s\n", sized ? "ok" : "FAIL");
    close(fd);

    int ok = (err == ENOSPC || err == EDQUOT) && sized;
    if (unlink(path) != 0) {
        printf("delete: errno %d\n", errno);
        ok = 0;
    }
    if (write_file(after, buf, chunk < 4096 ? chunk : 4096) == 0 && unlink(after) == 0) {
        printf("after delete: ok\n");
    } else {
        printf("after delete: errno %d\n", errno);
        ok = 0;
    }
    printf("fs_quota done\n");
    return ok ? 0 : 1;
}
