#ifndef KD_CHIREDIS_SHIM_H
#define KD_CHIREDIS_SHIM_H
// hiredis 0.14 (Debian 12). Swift cannot call the variadic redisCommand/redisAppendCommand;
// JobQueue uses the argv forms (redisCommandArgv, redisAppendCommandArgv) only.
#include <hiredis/hiredis.h>
#include <sys/time.h>

/// The reply types as plain ints, so Swift switches on them without importing macros one by one.
static inline int kd_redis_reply_string(void) { return REDIS_REPLY_STRING; }
static inline int kd_redis_reply_array(void) { return REDIS_REPLY_ARRAY; }
static inline int kd_redis_reply_integer(void) { return REDIS_REPLY_INTEGER; }
static inline int kd_redis_reply_nil(void) { return REDIS_REPLY_NIL; }
static inline int kd_redis_reply_status(void) { return REDIS_REPLY_STATUS; }
static inline int kd_redis_reply_error(void) { return REDIS_REPLY_ERROR; }

/// Connect over TCP with a timeout given in milliseconds.
static inline redisContext *kd_redis_connect_tcp(const char *host, int port, long timeout_ms) {
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    return redisConnectWithTimeout(host, port, tv);
}

/// Connect over a Unix socket with a timeout given in milliseconds.
static inline redisContext *kd_redis_connect_unix(const char *path, long timeout_ms) {
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    return redisConnectUnixWithTimeout(path, tv);
}

/// Set the read/write timeout of a connected context, in milliseconds.
static inline int kd_redis_set_timeout(redisContext *c, long timeout_ms) {
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    return redisSetTimeout(c, tv);
}

#endif
