/* SHA-256 (FIPS 180-4), streaming. */
#ifndef ECHO_SHA256_H
#define ECHO_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t nbuf;
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
void sha256_final(struct sha256 *c, unsigned char out[32]);
/* Lower-case hex digest of data[0..len) into hex[65]. */
void sha256_hex(const void *data, size_t len, char hex[65]);

#endif
