/* The guide's crc4 sandboxee (mode (b)): initialise freely, call sbx_sandbox_me_here(),
 * then only receive bytes over comms and send back their CRC-32.
 *
 * With "-evil" it tries, once sandboxed, to open a file: the policy does not allow it, so
 * the monitor ends the run as a VIOLATION. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "aiosandbox.h"

#define MAX_INPUT (1u << 20)

static unsigned char input[MAX_INPUT];

/* CRC-32 (IEEE 802.3, reflected), bit by bit: small and obviously right. */
static uint32_t crc32(const unsigned char *data, size_t size) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; i++) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1u));
  }
  return ~crc;
}

int main(int argc, char **argv) {
  int evil = argc > 1 && strcmp(argv[1], "-evil") == 0;
  if (sbx_sandbox_me_here() != 0) {
    fprintf(stderr, "crc4bin: %s\n", sbx_last_error());
    return 1;
  }
  size_t size = 0;
  if (sbx_recv_bytes(input, sizeof input, &size) != 0) return 2;
  if (evil) {
    int fd = open("/etc/passwd", O_RDONLY); /* not in the policy: a violation */
    (void)fd;
  }
  if (sbx_send_uint32(crc32(input, size)) != 0) return 3;
  return 0;
}
