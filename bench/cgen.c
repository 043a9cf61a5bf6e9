/*
 * cgen: the compiled load generator worker of the securemsg benchmark.
 *
 * It does the same job as bench/loadgen.py for the scenarios that need many
 * lines per second (fan-out, light load, slow reader, idle connections,
 * handshake churn), at a fraction of the CPU: servers that send every line
 * as a TLS record of its own (asyncio, uvloop, ncat) cost the Python worker
 * about as much per line as they cost themselves.  bench/run.py builds it
 * with `cc -O2 cgen.c -lssl -lcrypto` and falls back to loadgen.py if that
 * fails.
 *
 * Usage: cgen HOST PORT SOURCE SLOT NWORKERS SHMFILE LINESIZE
 *
 * Commands, one per line on standard input (each gets one JSON line back):
 *   connect ROLE N CONC TIMEOUT RCVBUF   open N connections: recv send idle slow
 *   hs SECS CONC RESUME                   handshake churn for SECS seconds
 *   sendmax WINDOW EXPECT BATCH           senders: as fast as the window allows
 *   sendrate RATE OFFSET                  senders: RATE lines/s each
 *   coalesce US                           sleep US after small epoll batches
 *   stop                                  senders stop
 *   record ON CLEAR                       record latencies (1/0), clear (1/0)
 *   dump PATH                             write latencies (int64 ns) to PATH
 *   ports ROLE                            local ports of ROLE's connections
 *   closeall | exit
 *
 * Lines sent are "~<monotonic ns, 19 digits> <filler>\n"; CLOCK_MONOTONIC is
 * the clock of Python's time.monotonic_ns, so both kinds of worker agree.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { DELIVERED, SENT, READY, LOST, RAW_BYTES, HANDSHAKES, RESUMED, ERRORS,
       POLLS, EVENTS, RECORDS, SLOT_WORDS = 16 };
enum { CONNECTING, HANDSHAKING, WAITING, READY_STATE, CLOSED, CLOSING };
enum { R_RECV, R_SEND, R_IDLE, R_SLOW, R_HS };
static const char *role_names[] = {"recv", "send", "idle", "slow", "hs"};

typedef struct conn {
    int fd, role, state, slot, want_out, in_epoll;
    SSL *ssl;
    char tail[32];
    int tail_len;
    double next_send, period;
    char *out;
    size_t out_len, out_off, out_cap;
    struct conn *next_sender;
} conn;

static SSL_CTX *ctx;
static struct sockaddr_in server_addr, source_addr;
static int use_source, ep, line_size, slot_index, nworkers;
static volatile int64_t *words, *mine;
static int64_t delivered, sent, ready_count, lost, raw_bytes, handshakes, resumed,
    errors_count, polls, events_count, records;
static conn **by_fd;
/* Connections closed while an epoll batch is being handled are freed after
 * it, so that a later event of the same batch never points to freed memory. */
static conn **graveyard;
static size_t graveyard_len, graveyard_cap;
static int by_fd_cap;
static int recording;
/* While counting at the maximum rate, sleep this long after a small epoll
 * batch, so that one wake-up handles many records (fewer syscalls). */
static long coalesce_us;
static int64_t *lat;
static size_t lat_len, lat_cap;
static char scratch[262144];
static char head[8] = "~";
static char tailpart[4096];
static int tailpart_len;

/* senders */
static conn **senders;
static int nsenders, senders_cap;
static int send_mode; /* 0 none, 1 max, 2 rate */
static int64_t window_lines, expect, batch;

/* connect job */
static struct {
    int active, role, todo, first, conc, inflight, done, failed, rcvbuf;
    double deadline, t0;
} job;

/* handshake churn job */
static struct {
    int active, conc, resume, inflight;
    double deadline, t0;
    int64_t h0, r0, e0;
    SSL_SESSION **sessions;
} hs;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void set_events(conn *c, uint32_t ev) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, c->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e);
    c->in_epoll = 1;
}

static void unwatch(conn *c) {
    if (c->in_epoll) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        c->in_epoll = 0;
    }
}

static void connect_more(void);
static void hs_start(int slot);
static void hs_finish(void);

static void finish_connect(void) {
    job.active = 0;
    reply("{\"ok\": true, \"done\": %d, \"failed\": %d, \"secs\": %.6f}", job.done,
          job.failed, now_s() - job.t0);
}

static void close_conn(conn *c, int was_lost) {
    if (c->state == CLOSED) return;
    if (was_lost && c->state == READY_STATE) lost++;
    int was_ready = c->state == READY_STATE;
    c->state = CLOSED;
    unwatch(c);
    if (c->ssl) SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    by_fd[c->fd] = NULL;
    if (c->role == R_HS) {
        if (hs.active && c->slot >= 0) {
            hs.inflight--;
            int slot = c->slot;
            c->slot = -1;
            hs_start(slot);
        }
    } else if (job.active && c->slot >= 0 && !was_ready) {
        job.failed++;
        job.inflight--;
        c->slot = -1;
        connect_more();
    }
    if (c->role != R_SEND) {
        /* senders stay allocated (they are in the senders list) but CLOSED */
        if (graveyard_len == graveyard_cap) {
            graveyard_cap = graveyard_cap ? graveyard_cap * 2 : 256;
            graveyard = realloc(graveyard, graveyard_cap * sizeof *graveyard);
        }
        graveyard[graveyard_len++] = c;
    }
}

static void bury(void) {
    for (size_t i = 0; i < graveyard_len; i++) {
        free(graveyard[i]->out);
        free(graveyard[i]);
    }
    graveyard_len = 0;
}

static conn *new_conn(int role, SSL_SESSION *session, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        errors_count++;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rcvbuf) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (use_source) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&source_addr, sizeof source_addr) < 0) {
            close(fd);
            errors_count++;
            return NULL;
        }
    }
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 &&
        errno != EINPROGRESS) {
        close(fd);
        errors_count++;
        return NULL;
    }
    if (fd >= by_fd_cap) {
        int cap = by_fd_cap ? by_fd_cap : 1024;
        while (cap <= fd) cap *= 2;
        by_fd = realloc(by_fd, cap * sizeof *by_fd);
        memset(by_fd + by_fd_cap, 0, (cap - by_fd_cap) * sizeof *by_fd);
        by_fd_cap = cap;
    }
    conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->role = role;
    c->slot = -1;
    c->state = CONNECTING;
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, fd);
    if (session) SSL_set_session(c->ssl, session);
    by_fd[fd] = c;
    set_events(c, EPOLLOUT);
    c->want_out = 1;
    return c;
}

static int flush_out(conn *c) {
    while (c->out_off < c->out_len) {
        int n = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
        if (n <= 0) {
            int err = SSL_get_error(c->ssl, n);
            if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
                if (!c->want_out) {
                    c->want_out = 1;
                    set_events(c, EPOLLIN | EPOLLOUT);
                }
                return 0;
            }
            close_conn(c, 1);
            return -1;
        }
        c->out_off += n;
    }
    c->out_off = c->out_len = 0;
    if (c->want_out) {
        c->want_out = 0;
        set_events(c, EPOLLIN);
    }
    return 1;
}

static void append_out(conn *c, const char *data, size_t len) {
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len) cap *= 2;
        c->out = realloc(c->out, cap);
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

static size_t make_line(char *buf, int64_t stamp) {
    size_t n = strlen(head);
    memcpy(buf, head, n);
    n += (size_t)sprintf(buf + n, "%019lld", (long long)stamp);
    memcpy(buf + n, tailpart, tailpart_len);
    return n + tailpart_len;
}

static void became_ready(conn *c) {
    c->state = READY_STATE;
    if (c->role == R_HS) {
        handshakes++;
        if (SSL_session_reused(c->ssl)) resumed++;
        int slot = c->slot;
        if (hs.active && slot >= 0 && hs.resume) {
            SSL_SESSION *s = SSL_get1_session(c->ssl);
            if (s) {
                if (hs.sessions[slot]) SSL_SESSION_free(hs.sessions[slot]);
                hs.sessions[slot] = s;
            }
        }
        /* A clean close: send close_notify and wait for the server to close
         * its end (closing first can race a server's bookkeeping; ncat
         * even quits on it). */
        SSL_shutdown(c->ssl);
        c->state = CLOSING;
        return;
    }
    ready_count++;
    if (c->role == R_SLOW) unwatch(c);
    if (c->role == R_SEND) {
        if (nsenders == senders_cap) {
            senders_cap = senders_cap ? senders_cap * 2 : 16;
            senders = realloc(senders, senders_cap * sizeof *senders);
        }
        senders[nsenders++] = c;
    }
    if (job.active && c->slot >= 0) {
        c->slot = -1;
        job.inflight--;
        job.done++;
        connect_more();
    }
}

/* Count one delivered line and record its latency: MARK points to its '~',
 * followed by the 19 digits of the time it was sent (not NUL-terminated). */
static void record_line(const char *mark, int64_t stamp_now) {
    char digits[20];
    memcpy(digits, mark + 1, 19);
    digits[19] = 0;
    if (lat_len == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 65536;
        lat = realloc(lat, lat_cap * sizeof *lat);
    }
    lat[lat_len++] = stamp_now - strtoll(digits, NULL, 10);
    delivered++;
}

/* Read what TLS has; count marked lines, record latencies; wait for the
 * first line in WAITING state. */
static void read_tls(conn *c) {
    char buf[16896];
    int64_t stamp_now = recording ? now_ns() : 0;
    for (;;) {
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n <= 0) {
            int err = SSL_get_error(c->ssl, n);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
            close_conn(c, 1);
            return;
        }
        records++;
        if (c->state == WAITING) {
            char *nl = memchr(buf, '\n', n);
            if (!nl) continue;
            became_ready(c);
            if (c->state != READY_STATE) return;
            if (c->role == R_IDLE || c->role == R_SLOW) return;
            size_t rest = n - (nl + 1 - buf);
            memmove(buf, nl + 1, rest);
            n = (int)rest;
        }
        if (recording) {
            /* lines may be split across records: keep a short tail */
            char *p = buf, *end = buf + n;
            if (c->tail_len) {
                char joined[64];
                int need = 20 - c->tail_len;
                if (need > n) need = n;
                memcpy(joined, c->tail, c->tail_len);
                memcpy(joined + c->tail_len, buf, need);
                if (c->tail_len + need >= 20) {
                    record_line(joined, stamp_now);
                    p = buf + need;
                    c->tail_len = 0;
                } else {
                    memcpy(c->tail + c->tail_len, buf, need);
                    c->tail_len += need;
                    p = end;
                }
            }
            while (p < end) {
                char *m = memchr(p, '~', end - p);
                if (!m) break;
                if (end - m < 20) {
                    c->tail_len = (int)(end - m);
                    memcpy(c->tail, m, c->tail_len);
                    break;
                }
                record_line(m, stamp_now);
                p = m + 20;
            }
        } else {
            char *p = buf, *end = buf + n;
            while ((p = memchr(p, '~', end - p)) != NULL) {
                delivered++;
                p++;
            }
        }
        if (!SSL_has_pending(c->ssl)) return; /* socket: epoll says when */
    }
}

static void drain_raw(conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
        if (n > 0) {
            raw_bytes += n;
            if ((size_t)n < sizeof scratch) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        close_conn(c, 1);
        return;
    }
}

static void do_handshake(conn *c) {
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        c->state = WAITING;
        if (c->want_out) {
            c->want_out = 0;
            set_events(c, EPOLLIN);
        }
        read_tls(c);
        return;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
        if (c->want_out) {
            c->want_out = 0;
            set_events(c, EPOLLIN);
        }
        return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        if (!c->want_out) {
            c->want_out = 1;
            set_events(c, EPOLLIN | EPOLLOUT);
        }
        return;
    }
    errors_count++;
    close_conn(c, 0);
}

static int64_t window_open(void) {
    int64_t total = 0;
    for (int w = 0; w < nworkers; w++) total += words[w * SLOT_WORDS + DELIVERED];
    total += delivered - mine[DELIVERED];
    return window_lines - (sent - total / expect);
}

static void pump(conn *c) {
    if (c->state != READY_STATE || c->out_off < c->out_len) return;
    int64_t room = window_open();
    if (room <= 0) return;
    int64_t k = room < batch ? room : batch;
    char line[8192];
    size_t len = make_line(line, now_ns());
    for (int64_t i = 0; i < k; i++) append_out(c, line, len);
    sent += k;
    flush_out(c);
}

static double rate_tick(void) {
    double t = now_s(), wait = 0.05;
    char line[8192];
    for (int i = 0; i < nsenders; i++) {
        conn *c = senders[i];
        if (c->state != READY_STATE) continue;
        int queued = 0;
        while (c->next_send <= t) {
            c->next_send += c->period;
            size_t len = make_line(line, now_ns());
            append_out(c, line, len);
            sent++;
            queued = 1;
        }
        if (queued && flush_out(c) < 0) continue;
        double w = c->next_send - t;
        if (w < wait) wait = w;
    }
    return wait < 0 ? 0 : wait;
}

static void on_event(conn *c, uint32_t ev) {
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (ev & (EPOLLERR | EPOLLHUP))) {
            errors_count++;
            close_conn(c, 0);
            return;
        }
        c->state = HANDSHAKING;
        do_handshake(c);
        return;
    }
    if (c->state == HANDSHAKING) {
        do_handshake(c);
        return;
    }
    if (c->state == CLOSING) {
        for (;;) {
            ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
            if (n > 0) continue;
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
            break;
        }
        c->state = WAITING; /* closed by the server: not lost */
        close_conn(c, 0);
        return;
    }
    if ((ev & EPOLLOUT) && c->out_off < c->out_len) {
        if (flush_out(c) < 0) return;
    }
    if (c->state == READY_STATE && c->role == R_IDLE) {
        drain_raw(c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) read_tls(c);
    if (c->state == READY_STATE && c->role == R_SEND && send_mode == 1) pump(c);
}

static void connect_more(void) {
    while (job.active && job.inflight < job.conc && job.first < job.todo) {
        job.first++;
        conn *c = new_conn(job.role, NULL, job.rcvbuf);
        if (!c) {
            job.failed++;
            continue;
        }
        c->slot = job.first;
        job.inflight++;
    }
    if (job.active && job.inflight == 0 && job.first >= job.todo) finish_connect();
}

static void check_deadline(void) {
    if (!job.active || now_s() < job.deadline) return;
    for (int fd = 0; fd < by_fd_cap; fd++) {
        conn *c = by_fd[fd];
        if (c && c->slot >= 0 && c->state != READY_STATE && c->role != R_HS) {
            c->slot = -1;
            job.failed++;
            close_conn(c, 0);
        }
    }
    job.todo = job.first;
    job.inflight = 0;
    finish_connect();
}

static void hs_start(int slot) {
    if (!hs.active) return;
    if (now_s() >= hs.deadline) {
        if (hs.inflight == 0) hs_finish();
        return;
    }
    for (int tries = 0; tries < 3; tries++) {
        conn *c = new_conn(R_HS, hs.resume ? hs.sessions[slot] : NULL, 0);
        if (c) {
            c->slot = slot;
            hs.inflight++;
            return;
        }
    }
    if (hs.inflight == 0) hs_finish();
}

static void hs_finish(void) {
    hs.active = 0;
    reply("{\"ok\": true, \"handshakes\": %lld, \"resumed\": %lld, \"errors\": %lld, "
          "\"secs\": %.6f}",
          (long long)(handshakes - hs.h0), (long long)(resumed - hs.r0),
          (long long)(errors_count - hs.e0), now_s() - hs.t0);
}

static int role_of(const char *name) {
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, role_names[i])) return i;
    return -1;
}

static int exiting;

static void command(char *line) {
    char op[32] = "", arg[4096] = "";
    double a = 0, b = 0, c3 = 0, d = 0;
    if (sscanf(line, "%31s", op) != 1) return;
    if (!strcmp(op, "connect")) {
        int n = 0, conc = 16, rcvbuf = 0;
        double timeout = 60;
        sscanf(line, "%*s %4095s %d %d %lf %d", arg, &n, &conc, &timeout, &rcvbuf);
        memset(&job, 0, sizeof job);
        job.active = 1;
        job.role = role_of(arg);
        job.todo = n;
        job.conc = conc;
        job.rcvbuf = rcvbuf;
        job.t0 = now_s();
        job.deadline = job.t0 + timeout;
        if (job.role < 0) {
            job.active = 0;
            reply("{\"ok\": false, \"error\": \"unknown role\"}");
            return;
        }
        connect_more();
    } else if (!strcmp(op, "hs")) {
        int conc = 16, res = 0;
        sscanf(line, "%*s %lf %d %d", &a, &conc, &res);
        for (int i = 0; hs.sessions && i < hs.conc; i++)
            if (hs.sessions[i]) SSL_SESSION_free(hs.sessions[i]);
        free(hs.sessions);
        memset(&hs, 0, sizeof hs);
        hs.active = 1;
        hs.conc = conc;
        hs.resume = res;
        hs.t0 = now_s();
        hs.deadline = hs.t0 + a;
        hs.h0 = handshakes;
        hs.r0 = resumed;
        hs.e0 = errors_count;
        hs.sessions = calloc(conc, sizeof *hs.sessions);
        for (int i = 0; i < conc; i++) hs_start(i);
    } else if (!strcmp(op, "sendmax")) {
        sscanf(line, "%*s %lf %lf %lf", &a, &b, &c3);
        window_lines = (int64_t)a;
        expect = b < 1 ? 1 : (int64_t)b;
        batch = c3 < 1 ? 32 : (int64_t)c3;
        send_mode = 1;
        for (int i = 0; i < nsenders; i++) pump(senders[i]);
        reply("{\"ok\": true, \"senders\": %d}", nsenders);
    } else if (!strcmp(op, "sendrate")) {
        sscanf(line, "%*s %lf %lf", &a, &d);
        double t = now_s(), spread = nsenders ? 1.0 / a / nsenders : 0;
        for (int i = 0; i < nsenders; i++) {
            senders[i]->period = 1.0 / a;
            senders[i]->next_send = t + d + i * spread;
        }
        send_mode = 2;
        reply("{\"ok\": true, \"senders\": %d}", nsenders);
    } else if (!strcmp(op, "coalesce")) {
        sscanf(line, "%*s %ld", &coalesce_us);
        reply("{\"ok\": true}");
    } else if (!strcmp(op, "stop")) {
        send_mode = 0;
        reply("{\"ok\": true, \"sent\": %lld}", (long long)sent);
    } else if (!strcmp(op, "record")) {
        int on = 0, clear = 0;
        sscanf(line, "%*s %d %d", &on, &clear);
        recording = on;
        if (clear) lat_len = 0;
        reply("{\"ok\": true, \"samples\": %zu}", lat_len);
    } else if (!strcmp(op, "dump")) {
        sscanf(line, "%*s %4095s", arg);
        FILE *f = fopen(arg, "wb");
        if (f) {
            fwrite(lat, sizeof *lat, lat_len, f);
            fclose(f);
        }
        reply("{\"ok\": %s, \"samples\": %zu}", f ? "true" : "false", lat_len);
    } else if (!strcmp(op, "ports")) {
        sscanf(line, "%*s %4095s", arg);
        int role = role_of(arg);
        printf("{\"ok\": true, \"ports\": [");
        int first = 1;
        for (int fd = 0; fd < by_fd_cap; fd++) {
            conn *c = by_fd[fd];
            if (!c || c->role != role || c->state == CLOSED) continue;
            struct sockaddr_in sa;
            socklen_t len = sizeof sa;
            getsockname(fd, (struct sockaddr *)&sa, &len);
            printf("%s%d", first ? "" : ", ", ntohs(sa.sin_port));
            first = 0;
        }
        reply("]}");
    } else if (!strcmp(op, "closeall")) {
        send_mode = 0;
        for (int fd = 0; fd < by_fd_cap; fd++)
            if (by_fd[fd]) close_conn(by_fd[fd], 0);
        nsenders = 0;
        reply("{\"ok\": true}");
    } else if (!strcmp(op, "exit")) {
        exiting = 1;
        reply("{\"ok\": true}");
    } else {
        reply("{\"ok\": false, \"error\": \"unknown op\"}");
    }
}

static char ctl[65536];
static size_t ctl_len;

static void read_control(void) {
    ssize_t n = read(0, ctl + ctl_len, sizeof ctl - 1 - ctl_len);
    if (n == 0) {
        exiting = 1;
        return;
    }
    if (n < 0) return;
    ctl_len += n;
    char *start = ctl, *nl;
    while ((nl = memchr(start, '\n', ctl + ctl_len - start)) != NULL) {
        *nl = 0;
        command(start);
        start = nl + 1;
    }
    ctl_len = ctl + ctl_len - start;
    memmove(ctl, start, ctl_len);
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: cgen HOST PORT SOURCE SLOT NWORKERS SHM LINESIZE\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    memset(&server_addr, 0, sizeof server_addr);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &server_addr.sin_addr);
    if (strcmp(argv[3], "-")) {
        use_source = 1;
        source_addr.sin_family = AF_INET;
        inet_pton(AF_INET, argv[3], &source_addr.sin_addr);
    }
    slot_index = atoi(argv[4]);
    nworkers = atoi(argv[5]);
    int shm = open(argv[6], O_RDWR);
    struct stat st;
    if (shm < 0 || fstat(shm, &st) < 0) {
        perror("shm");
        return 1;
    }
    words = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
    mine = words + slot_index * SLOT_WORDS;
    line_size = atoi(argv[7]);
    int fixed = 1 + 19 + 1 + 1;
    tailpart[0] = ' ';
    tailpart_len = 1;
    const char *alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (int i = 0; i < line_size - fixed && tailpart_len < (int)sizeof tailpart - 2; i++)
        tailpart[tailpart_len++] = alphabet[i % 36];
    tailpart[tailpart_len++] = '\n';

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 65536);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);

    ep = epoll_create1(0);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e);
    struct epoll_event evs[4096];
    while (!exiting) {
        double timeout = 0.05;
        if (send_mode == 2) timeout = rate_tick();
        else if (send_mode == 1 && nsenders) {
            timeout = 0.0002;
            for (int i = 0; i < nsenders; i++) pump(senders[i]);
        }
        struct timespec ts = {.tv_sec = (time_t)timeout,
                              .tv_nsec = (long)((timeout - (time_t)timeout) * 1e9)};
        int n = epoll_pwait2(ep, evs, 4096, &ts, NULL);
        if (n < 0 && errno == ENOSYS) n = epoll_wait(ep, evs, 4096, (int)(timeout * 1000) + 1);
        polls++;
        if (n > 0) events_count += n;
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                read_control();
                continue;
            }
            if (c->state != CLOSED) on_event(c, evs[i].events);
        }
        if (job.active) check_deadline();
        if (hs.active && now_s() > hs.deadline + 3) {
            /* servers that never close: give up on them */
            hs.deadline = 0;
            for (int fd = 0; fd < by_fd_cap; fd++)
                if (by_fd[fd] && by_fd[fd]->role == R_HS) close_conn(by_fd[fd], 0);
        }
        bury();
        if (coalesce_us && !recording && n < 512) usleep(coalesce_us);
        mine[DELIVERED] = delivered;
        mine[SENT] = sent;
        mine[READY] = ready_count;
        mine[LOST] = lost;
        mine[RAW_BYTES] = raw_bytes;
        mine[HANDSHAKES] = handshakes;
        mine[RESUMED] = resumed;
        mine[ERRORS] = errors_count;
        mine[POLLS] = polls;
        mine[EVENTS] = events_count;
        mine[RECORDS] = records;
    }
    return 0;
}
