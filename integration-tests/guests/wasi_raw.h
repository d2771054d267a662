/*
 * wasi_raw.h — the WASI preview1 calls a Ferry hub implements, imported
 * directly (not through wasi-libc's wrappers), with every pointer and length
 * a plain 32-bit integer so a test guest can pass any value at all.
 * Used by the hostile_* test guests.
 */
#ifndef WASI_RAW_H
#define WASI_RAW_H

#include <stdint.h>

#define WASI_RAW(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(name)))

WASI_RAW("args_get") int32_t raw_args_get(int32_t argv, int32_t argv_buf);
WASI_RAW("args_sizes_get") int32_t raw_args_sizes_get(int32_t argc, int32_t argv_buf_size);
WASI_RAW("environ_get") int32_t raw_environ_get(int32_t environ, int32_t environ_buf);
WASI_RAW("environ_sizes_get") int32_t raw_environ_sizes_get(int32_t count, int32_t buf_size);
WASI_RAW("clock_res_get") int32_t raw_clock_res_get(int32_t id, int32_t resolution);
WASI_RAW("clock_time_get") int32_t raw_clock_time_get(int32_t id, int64_t precision, int32_t time);
WASI_RAW("fd_close") int32_t raw_fd_close(int32_t fd);
WASI_RAW("fd_fdstat_get") int32_t raw_fd_fdstat_get(int32_t fd, int32_t stat);
WASI_RAW("fd_prestat_get") int32_t raw_fd_prestat_get(int32_t fd, int32_t buf);
WASI_RAW("fd_prestat_dir_name") int32_t raw_fd_prestat_dir_name(int32_t fd, int32_t path, int32_t len);
WASI_RAW("fd_read") int32_t raw_fd_read(int32_t fd, int32_t iovs, int32_t iovs_len, int32_t nread);
WASI_RAW("fd_seek") int32_t raw_fd_seek(int32_t fd, int64_t offset, int32_t whence, int32_t new_offset);
WASI_RAW("fd_write") int32_t raw_fd_write(int32_t fd, int32_t iovs, int32_t iovs_len, int32_t nwritten);
WASI_RAW("poll_oneoff") int32_t raw_poll_oneoff(int32_t in, int32_t out, int32_t nsubscriptions, int32_t nevents);
WASI_RAW("random_get") int32_t raw_random_get(int32_t buf, int32_t len);
WASI_RAW("sched_yield") int32_t raw_sched_yield(void);
WASI_RAW("proc_exit") _Noreturn void raw_proc_exit(int32_t code);
WASI_RAW("path_open") int32_t raw_path_open(int32_t fd, int32_t dirflags, int32_t path, int32_t path_len,
                                            int32_t oflags, int64_t rights_base, int64_t rights_inheriting,
                                            int32_t fdflags, int32_t opened_fd);
/* Outside the hub's subset: answered with ENOSYS. */
WASI_RAW("sock_accept") int32_t raw_sock_accept(int32_t fd, int32_t flags, int32_t fd_out);

/* A guest address as the integer the raw calls take. */
#define ADDR(p) ((int32_t)(uintptr_t)(p))

/* One past the last byte of linear memory (below 4 GiB for these guests). */
static inline uint32_t memory_end(void) {
    return (uint32_t)(__builtin_wasm_memory_size(0) * 65536u);
}

/* A ciovec as the ABI lays it out. */
struct raw_iovec {
    int32_t buf;
    int32_t len;
};

#endif
