/*
 * Batched UDP receive for the receive thread (src/receive/udp-thread.ts): recvmmsg(2) reads up to BATCH datagrams
 * per system call, with the kernel's receive time of each, and writes them straight into a chunk in the layout of
 * src/receive/udp-wire.ts. node:dgram reads one datagram per call and builds a Buffer and an address object for each,
 * which at 100,000 datagrams/s took most of a core on its own.
 *
 * Linux only (recvmmsg, SO_RCVBUFFORCE); elsewhere, or when this fails to build, the thread reads with node:dgram.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <node_api.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
/* Larger than any UDP payload (65,507 bytes over IPv4, 65,527 over IPv6), so no datagram is cut. */
#define SLOT_BYTES 65536
/* Matches udp-wire.ts: [u32 length][u8 address length][address][f64 received-at ms][datagram]. */
#define FIXED_HEADER_BYTES 13
#define MAX_FDS 16
#define ADDRESS_BYTES (INET6_ADDRSTRLEN + IF_NAMESIZE + 2)
/* The most one datagram takes in a chunk: a chunk at least this long always has room for the next one. */
#define MAX_RECORD_BYTES (FIXED_HEADER_BYTES + ADDRESS_BYTES + SLOT_BYTES)

/* Sockets one thread may hold open at once. */
#define MAX_OPEN 256

/* Per thread (each worker has its own napi_env): the slots recvmmsg fills. Pages are touched only as far as the
 * datagrams reach, so ~300-byte datagrams keep a page per slot resident, not 64 KiB. */
typedef struct {
  unsigned char *slots;
  struct mmsghdr headers[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_storage from[BATCH];
  char control[BATCH][CMSG_SPACE(sizeof(struct timeval))];
  /* Read but not yet written to a chunk: headers[next, count). */
  int next, count;
  double readAtMs;
  /* Sockets opened here and not closed: closed when the thread ends, however it ends, so that a thread that fails
   * leaves no port bound behind it (libuv closes its own handles; these are not its). */
  int open[MAX_OPEN];
  int openCount;
} Scratch;

static void free_scratch(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Scratch *s = data;
  for (int i = 0; i < s->openCount; i++) close(s->open[i]);
  free(s->slots);
  free(s);
}

static Scratch *scratch_of(napi_env env) {
  void *data = NULL;
  napi_get_instance_data(env, &data);
  if (data != NULL) return data;
  Scratch *s = calloc(1, sizeof(Scratch));
  if (s == NULL) return NULL;
  s->slots = malloc((size_t)BATCH * SLOT_BYTES);
  if (s->slots == NULL) {
    free(s);
    return NULL;
  }
  for (int i = 0; i < BATCH; i++) {
    s->iov[i].iov_base = s->slots + (size_t)i * SLOT_BYTES;
    s->iov[i].iov_len = SLOT_BYTES;
    struct msghdr *h = &s->headers[i].msg_hdr;
    h->msg_name = &s->from[i];
    h->msg_namelen = sizeof s->from[i];
    h->msg_iov = &s->iov[i];
    h->msg_iovlen = 1;
    h->msg_control = s->control[i];
    h->msg_controllen = sizeof s->control[i];
  }
  napi_set_instance_data(env, s, free_scratch, NULL);
  return s;
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  char code[32];
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
  const char *name = strerrorname_np(err);
  if (name != NULL) snprintf(code, sizeof code, "%s", name);
  else
#endif
    snprintf(code, sizeof code, "E%d", err);
  napi_throw_error(env, code, message);
  return NULL;
}

static int get_int(napi_env env, napi_value v, int32_t *out) { return napi_get_value_int32(env, v, out) == napi_ok; }

static napi_value make_int(napi_env env, int64_t n) {
  napi_value v;
  napi_create_int64(env, n, &v);
  return v;
}

static napi_value make_string(napi_env env, const char *s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

/* The address as node:dgram prints it: IPv6 link-local addresses carry their interface (`fe80::1%eth0`). */
static size_t format_address(const struct sockaddr_storage *ss, char *out, size_t size) {
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    if (inet_ntop(AF_INET, &a->sin_addr, out, size) == NULL) return 0;
    return strlen(out);
  }
  if (ss->ss_family != AF_INET6) return 0;
  const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
  if (inet_ntop(AF_INET6, &a->sin6_addr, out, size) == NULL) return 0;
  size_t n = strlen(out);
  if (IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr) && a->sin6_scope_id != 0) {
    char name[IF_NAMESIZE];
    if (if_indextoname(a->sin6_scope_id, name) != NULL) n += (size_t)snprintf(out + n, size - n, "%%%s", name);
    else n += (size_t)snprintf(out + n, size - n, "%%%u", a->sin6_scope_id);
  }
  return n < size ? n : size - 1;
}

/* open(host, port, family 4|6, receiveBufferBytes) → [fd, boundAddress, boundPort, grantedBufferBytes, bufferError]
 * The buffer is asked with SO_RCVBUFFORCE first, which root may use beyond net.core.rmem_max (as rsyslog's imudp
 * does), then with SO_RCVBUF, which the kernel caps at rmem_max. */
static napi_value udp_open(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char host[ADDRESS_BYTES];
  size_t hostLength;
  int32_t port, family, bufferBytes;
  if (argc < 4 || napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hostLength) != napi_ok ||
      !get_int(env, argv[1], &port) || !get_int(env, argv[2], &family) || !get_int(env, argv[3], &bufferBytes)) {
    napi_throw_type_error(env, NULL, "open(host: string, port: number, family: 4 | 6, receiveBufferBytes: number)");
    return NULL;
  }
  struct sockaddr_storage at;
  socklen_t atLength;
  memset(&at, 0, sizeof at);
  if (family == 4) {
    struct sockaddr_in *a = (struct sockaddr_in *)&at;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return throw_errno(env, "open: not an IPv4 address", EINVAL);
    atLength = sizeof *a;
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&at;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    char *percent = strchr(host, '%');
    if (percent != NULL) {
      *percent = 0;
      a->sin6_scope_id = if_nametoindex(percent + 1);
      if (a->sin6_scope_id == 0) a->sin6_scope_id = (uint32_t)strtoul(percent + 1, NULL, 10);
    }
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return throw_errno(env, "open: not an IPv6 address", EINVAL);
    atLength = sizeof *a;
  }
  Scratch *s = scratch_of(env);
  if (s == NULL) return throw_errno(env, "open", ENOMEM);
  if (s->openCount == MAX_OPEN) return throw_errno(env, "open", EMFILE);
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int on = 1, off = 0;
  /* As node:dgram binds udp6: dual-stack, IPv4 senders arriving as ::ffff:a.b.c.d. */
  if (family == 6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  setsockopt(fd, SOL_SOCKET, SO_TIMESTAMP, &on, sizeof on);
  const char *bufferError = NULL;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufferBytes, sizeof bufferBytes) != 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufferBytes, sizeof bufferBytes) != 0) {
    bufferError = strerror(errno);
  }
  if (bind(fd, (struct sockaddr *)&at, atLength) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "bind", err);
  }
  struct sockaddr_storage bound;
  socklen_t boundLength = sizeof bound;
  getsockname(fd, (struct sockaddr *)&bound, &boundLength);
  char boundText[ADDRESS_BYTES];
  format_address(&bound, boundText, sizeof boundText);
  int granted = 0;
  socklen_t grantedLength = sizeof granted;
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &grantedLength);
  uint16_t boundPort = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                                        : ((struct sockaddr_in6 *)&bound)->sin6_port);
  s->open[s->openCount++] = fd;
  napi_value result;
  napi_create_array_with_length(env, 5, &result);
  napi_set_element(env, result, 0, make_int(env, fd));
  napi_set_element(env, result, 1, make_string(env, boundText));
  napi_set_element(env, result, 2, make_int(env, boundPort));
  napi_set_element(env, result, 3, make_int(env, granted));
  napi_value error;
  if (bufferError != NULL) error = make_string(env, bufferError);
  else napi_get_undefined(env, &error);
  napi_set_element(env, result, 4, error);
  return result;
}

/* close(fd) → whether it was a socket this thread opened and had not closed: only those are closed, so that a
 * second close cannot close whatever descriptor the number was given to since. */
static napi_value udp_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || !get_int(env, argv[0], &fd)) {
    napi_throw_type_error(env, NULL, "close(fd: number)");
    return NULL;
  }
  Scratch *s = scratch_of(env);
  int found = 0;
  for (int i = 0; s != NULL && i < s->openCount; i++) {
    if (s->open[i] != fd) continue;
    s->open[i] = s->open[--s->openCount];
    found = 1;
    break;
  }
  if (found) close(fd);
  napi_value result;
  napi_get_boolean(env, found, &result);
  return result;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double received_at_ms(struct msghdr *h, double fallback) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMP) {
      struct timeval tv;
      memcpy(&tv, CMSG_DATA(c), sizeof tv);
      return (double)tv.tv_sec * 1e3 + (double)tv.tv_usec / 1e3;
    }
  }
  return fallback;
}

static void put_le(unsigned char *p, uint64_t v, int bytes) {
  for (int k = 0; k < bytes; k++) p[k] = (unsigned char)(v >> (8 * k));
}

/* Writes pending datagrams into the chunk until it reaches sealAt; false when it did, or when one did not fit. */
static int write_pending(Scratch *s, unsigned char *chunk, size_t chunkLength, int32_t sealAt, int32_t *at,
                         double *result) {
  while (s->next < s->count) {
    if (*at >= sealAt) return 0;
    int i = s->next;
    struct msghdr *h = &s->headers[i].msg_hdr;
    uint32_t length = s->headers[i].msg_len;
    char address[ADDRESS_BYTES];
    size_t addressLength = format_address(&s->from[i], address, sizeof address);
    size_t needed = FIXED_HEADER_BYTES + addressLength + length;
    if ((size_t)*at + needed > chunkLength) return 0;
    double receivedAt = received_at_ms(h, s->readAtMs);
    uint64_t bits;
    memcpy(&bits, &receivedAt, sizeof bits);
    unsigned char *p = chunk + *at;
    put_le(p, length, 4);
    p[4] = (unsigned char)addressLength;
    memcpy(p + 5, address, addressLength);
    put_le(p + 5 + addressLength, bits, 8);
    memcpy(p + FIXED_HEADER_BYTES + addressLength, s->slots + (size_t)i * SLOT_BYTES, length);
    *at += (int32_t)needed;
    result[0]++;
    s->next++;
  }
  return 1;
}

/*
 * receive(fds: Int32Array, waitMs, chunk: Uint8Array, at, sealAt, result: Float64Array) → the chunk's new length.
 * Waits up to waitMs (0: not at all) for a socket to be readable, then reads the sockets until every one has run dry
 * or the chunk reaches sealAt (or is full). Datagrams read that did not fit stay here and are written first by the
 * next call, so none read is lost; an empty `fds` writes only those. The chunk must hold at least MAX_RECORD_BYTES.
 * result[0]: datagrams written; result[1]: 1 when it stopped for room (more may be waiting); result[2]: the errno of
 * a failed read (0: none).
 */
static napi_value udp_receive(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type type;
  size_t fdCount, chunkLength, resultLength;
  void *fdData, *chunkData, *resultData;
  int32_t waitMs, at, sealAt;
  if (argc < 6 || napi_get_typedarray_info(env, argv[0], &type, &fdCount, &fdData, NULL, NULL) != napi_ok ||
      type != napi_int32_array || !get_int(env, argv[1], &waitMs) ||
      napi_get_typedarray_info(env, argv[2], &type, &chunkLength, &chunkData, NULL, NULL) != napi_ok ||
      type != napi_uint8_array || !get_int(env, argv[3], &at) || !get_int(env, argv[4], &sealAt) ||
      napi_get_typedarray_info(env, argv[5], &type, &resultLength, &resultData, NULL, NULL) != napi_ok ||
      type != napi_float64_array || resultLength < 3 || fdCount > MAX_FDS || at < 0 || (size_t)at > chunkLength ||
      sealAt < 0 || chunkLength < MAX_RECORD_BYTES) {
    napi_throw_type_error(env, NULL,
                          "receive(fds: Int32Array, waitMs, chunk: Uint8Array of at least one record's room, at, "
                          "sealAt, result: Float64Array(3))");
    return NULL;
  }
  Scratch *s = scratch_of(env);
  if (s == NULL) return throw_errno(env, "receive", ENOMEM);
  const int32_t *fds = fdData;
  unsigned char *chunk = chunkData;
  double *result = resultData;
  result[0] = result[1] = result[2] = 0;

  if (!write_pending(s, chunk, chunkLength, sealAt, &at, result) || at >= sealAt) {
    result[1] = 1;
    return make_int(env, at);
  }
  if (waitMs > 0 && fdCount > 0) {
    struct pollfd p[MAX_FDS];
    for (size_t i = 0; i < fdCount; i++) {
      p[i].fd = fds[i];
      p[i].events = POLLIN;
      p[i].revents = 0;
    }
    if (poll(p, fdCount, waitMs) <= 0) return make_int(env, at);
  }
  int dry[MAX_FDS] = {0};
  size_t dryCount = 0;
  while (dryCount < fdCount) {
    for (size_t f = 0; f < fdCount; f++) {
      if (dry[f]) continue;
      /* The kernel shortens these to what it wrote; the rest of each header was set once, in scratch_of. */
      for (int i = 0; i < s->count; i++) {
        s->headers[i].msg_hdr.msg_namelen = sizeof s->from[i];
        s->headers[i].msg_hdr.msg_controllen = sizeof s->control[i];
      }
      int n = recvmmsg(fds[f], s->headers, BATCH, MSG_DONTWAIT, NULL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) result[2] = errno;
        n = 0;
      }
      s->count = n;
      s->next = 0;
      s->readAtMs = now_ms();
      if (n < BATCH) {
        dry[f] = 1;
        dryCount++;
      }
      if (!write_pending(s, chunk, chunkLength, sealAt, &at, result) || at >= sealAt) {
        result[1] = 1;
        return make_int(env, at);
      }
    }
  }
  return make_int(env, at);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, udp_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"receive", NULL, udp_receive, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, udp_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
