/*
 * hostile_wasi — test guest: every WASI call the hub implements, with
 * pointers and lengths outside the guest's memory (at its end, past it,
 * wrapping past 4 GiB) and with counts above the hub's limits. Prints one
 * `CALL(ARGS) = ERRNO` line per call (8 EBADF, 21 EFAULT, 28 EINVAL,
 * 52 ENOSYS, 70 ESPIPE), then `memory_bytes=N` and `done`, then exits
 * with proc_exit(7).
 * Deploy it with at least one environment variable and a volume (fd 3).
 *
 * Usage: hostile_wasi   (no arguments)
 */
#include <stdio.h>

#include "wasi_raw.h"

#define CALL(label, expr) printf("%s = %d\n", label, (int)(expr))

static uint32_t words[64];
static uint8_t subscriptions[4 * 48];
static uint8_t events[4 * 32];
static struct raw_iovec iovecs[2];

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const int32_t end = (int32_t)memory_end();
    const int32_t ok = ADDR(words);
    const int32_t wraps = (int32_t)0xFFFFFFFCu;

    CALL("args_sizes_get(end - 2, ok)", raw_args_sizes_get(end - 2, ok));
    CALL("args_sizes_get(ok, 0xfffffffc)", raw_args_sizes_get(ok, wraps));
    CALL("args_get(end - 2, ok)", raw_args_get(end - 2, ok));
    CALL("args_get(ok, end - 1)", raw_args_get(ok, end - 1));
    CALL("environ_sizes_get(end, ok)", raw_environ_sizes_get(end, ok));
    CALL("environ_get(end - 2, ok)", raw_environ_get(end - 2, ok));
    CALL("environ_get(ok, 0xfffffffc)", raw_environ_get(ok, wraps));

    CALL("clock_res_get(monotonic, end - 4)", raw_clock_res_get(1, end - 4));
    CALL("clock_res_get(99, ok)", raw_clock_res_get(99, ok));
    CALL("clock_time_get(monotonic, 0xfffffffc)", raw_clock_time_get(1, 0, wraps));
    CALL("clock_time_get(99, ok)", raw_clock_time_get(99, 0, ok));

    CALL("fd_close(99)", raw_fd_close(99));
    CALL("fd_fdstat_get(1, end - 8)", raw_fd_fdstat_get(1, end - 8));
    CALL("fd_fdstat_get(99, ok)", raw_fd_fdstat_get(99, ok));
    CALL("fd_prestat_get(3, end)", raw_fd_prestat_get(3, end));
    CALL("fd_prestat_dir_name(3, end, 100)", raw_fd_prestat_dir_name(3, end, 100));
    CALL("fd_seek(1, 0, 0, end)", raw_fd_seek(1, 0, 0, end));
    CALL("fd_seek(99, 0, 0, ok)", raw_fd_seek(99, 0, 0, ok));

    iovecs[0].buf = ok;
    iovecs[0].len = 4;
    iovecs[1].buf = end - 4;
    iovecs[1].len = 8;
    CALL("fd_read(0, iovecs at end - 4, 1, ok)", raw_fd_read(0, end - 4, 1, ok));
    CALL("fd_read(0, iovec past the end, 2, ok)", raw_fd_read(0, ADDR(iovecs), 2, ok));
    CALL("fd_read(0, ok, 1025, ok)", raw_fd_read(0, ADDR(iovecs), 1025, ok));
    CALL("fd_read(0, ok, 1, end)", raw_fd_read(0, ADDR(iovecs), 1, end));
    CALL("fd_read(1, ok, 1, ok)", raw_fd_read(1, ADDR(iovecs), 1, ok));

    CALL("fd_write(1, iovecs at 0xfffffff8, 2, ok)", raw_fd_write(1, (int32_t)0xFFFFFFF8u, 2, ok));
    CALL("fd_write(1, iovec past the end, 2, ok)", raw_fd_write(1, ADDR(iovecs), 2, ok));
    CALL("fd_write(2, ok, 1, end - 2)", raw_fd_write(2, ADDR(iovecs), 1, end - 2));
    CALL("fd_write(1, ok, 1025, ok)", raw_fd_write(1, ADDR(iovecs), 1025, ok));
    CALL("fd_write(1, ok, -1, ok)", raw_fd_write(1, ADDR(iovecs), -1, ok));
    CALL("fd_write(0, ok, 1, ok)", raw_fd_write(0, ADDR(iovecs), 1, ok));
    iovecs[0].buf = 16;
    iovecs[0].len = (int32_t)0xFFFFFF00u;
    CALL("fd_write(1, iovec of 0xffffff00 bytes, 1, ok)", raw_fd_write(1, ADDR(iovecs), 1, ok));

    /* One clock subscription that has expired (relative, monotonic, 0 ns). */
    subscriptions[8] = 0;
    subscriptions[16] = 1;
    const int32_t in = ADDR(subscriptions), out = ADDR(events);
    CALL("poll_oneoff(ok, ok, 0, ok)", raw_poll_oneoff(in, out, 0, ok));
    CALL("poll_oneoff(ok, ok, 100000, ok)", raw_poll_oneoff(in, out, 100000, ok));
    CALL("poll_oneoff(end - 48, ok, 2, ok)", raw_poll_oneoff(end - 48, out, 2, ok));
    CALL("poll_oneoff(ok, end - 32, 2, ok)", raw_poll_oneoff(in, end - 32, 2, ok));
    CALL("poll_oneoff(ok, ok, 1, end)", raw_poll_oneoff(in, out, 1, end));
    CALL("poll_oneoff(ok, ok, 1, ok)", raw_poll_oneoff(in, out, 1, ok));

    CALL("random_get(end - 8, 16)", raw_random_get(end - 8, 16));
    CALL("random_get(16, 0xffffff00)", raw_random_get(16, (int32_t)0xFFFFFF00u));
    CALL("sched_yield()", raw_sched_yield());
    CALL("path_open(3, end, ...)", raw_path_open(3, 0, end, 100, 0, 0, 0, 0, end));
    CALL("sock_accept(3, 0, ok)", raw_sock_accept(3, 0, ok));

    printf("memory_bytes=%u\n", (unsigned)memory_end());
    printf("done\n");
    fflush(stdout);
    raw_proc_exit(7);
}
