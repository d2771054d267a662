/*
 * ferry.h — the host API a Ferry hub offers to guests, as the import module
 * "ferry". Everything else a guest needs comes from WASI preview1
 * (wasi_snapshot_preview1) as implemented by the hub.
 *
 * All pointers are offsets into the guest's linear memory; all lengths are
 * in bytes. Every range a call takes (pointer and length) must lie inside
 * the guest's memory, whole: the hub checks it before it reads or writes
 * anything, and as this API has no error code for it, a range outside
 * memory fails the function with "guest passed memory outside its linear
 * memory to ferry.CALL: ..." naming the range.
 */
#ifndef FERRY_H
#define FERRY_H

#include <stdint.h>

#define FERRY_IMPORT(name) __attribute__((import_module("ferry"), import_name(name)))

/* Log levels for ferry_log. */
#define FERRY_LOG_ERROR 1
#define FERRY_LOG_WARN 2
#define FERRY_LOG_INFO 3
#define FERRY_LOG_DEBUG 4

/* Return codes. */
#define FERRY_TIMEOUT (-1)   /* ferry_recv: no message arrived in time */
#define FERRY_NO_CALLER (-2) /* ferry_reply: no received message is waiting for a reply */
#define FERRY_NO_SUCH_FUNCTION (-3) /* ferry_send, ferry_call: no hub of the cluster runs the target */
#define FERRY_INBOX_FULL (-4) /* ferry_send, ferry_call: the target's inbox holds 1024 messages or 16 MiB */
#define FERRY_DENIED (-5) /* ferry_send, ferry_call: a messaging rule (send-to, invoked-by) forbids it */
#define FERRY_FAILED (-6) /* ferry_send, ferry_call: the target is not running (stopped, failed),
                             ended without replying, or its hub cannot be reached;
                             ferry_call: the target is the caller itself */
#define FERRY_TOO_BIG (-7) /* ferry_reply, ferry_send, ferry_call: more than 16 MiB of data;
                              nothing was sent (a reply: the message still waits for one) */
/* ferry_send and ferry_call also return FERRY_TIMEOUT when the target did not
 * take the message (or, ferry_call, did not reply) in time. */

/* Writes one log line (not stdout) with a level. At most 64 KiB of `msg`
 * are kept; the rest is dropped. */
FERRY_IMPORT("log") void ferry_log(int32_t level, const char *msg, uint32_t len);

/* Sleeps for `ms` milliseconds of the function's virtual clock. */
FERRY_IMPORT("sleep_ms") void ferry_sleep_ms(uint64_t ms);

/*
 * Waits for the next message in the function's inbox.
 * timeout_ms < 0 waits forever; 0 polls.
 * Returns the message length n >= 0. If n <= cap the message was copied to
 * buf and removed from the inbox; if n > cap nothing was copied and the
 * message stays first in the inbox (call again with a buffer of n bytes).
 * Returns FERRY_TIMEOUT when no message arrived in time.
 * The whole buffer, cap bytes at buf, must be in memory (checked before
 * waiting).
 */
FERRY_IMPORT("recv") int32_t ferry_recv(uint8_t *buf, uint32_t cap, int64_t timeout_ms);

/* Replies to the message last returned by ferry_recv. 0, FERRY_NO_CALLER,
 * or FERRY_TOO_BIG (more than 16 MiB: nothing sent, reply again). */
FERRY_IMPORT("reply") int32_t ferry_reply(const uint8_t *data, uint32_t len);

/* Puts a message into another function's inbox (no reply expected), on
 * this hub or any hub of the cluster. Returns once the target's inbox took
 * it: a target being moved takes it where it arrives, within the hub's
 * invoke timeout. At most 16 MiB of `data` (more: FERRY_TOO_BIG, nothing
 * sent). 0 or a negative code above. */
FERRY_IMPORT("send") int32_t ferry_send(const char *name, uint32_t name_len,
                                        const uint8_t *data, uint32_t len);

/*
 * Calls another function, on this hub or any hub of the cluster: sends
 * `data` as a message and waits for its ferry_reply, at most `timeout_ms`
 * (< 0: the hub's invoke timeout). A target being moved gets the message
 * where it arrives, once. Returns the reply's length n >= 0, of which the
 * first min(n, reply_cap) bytes were copied to `reply` (n > reply_cap: the
 * rest is lost), or a negative code above. All three ranges must be in
 * memory (checked before anything is sent).
 *
 * The caller may be checkpointed, suspended or moved while it waits: the
 * reply comes to it where it goes on, once.
 */
FERRY_IMPORT("call") int32_t ferry_call(const char *name, uint32_t name_len,
                                        const uint8_t *data, uint32_t len,
                                        uint8_t *reply, uint32_t reply_cap,
                                        int64_t timeout_ms);

#endif
