/*
 * loadgen.c - a small single-threaded epoll load generator for the
 * minisocketserver benchmarks (issue 6).  Compiled by benchmarks/run.py with
 * the machine's gcc; it has no dependencies beyond libc.
 *
 * Why C and why one thread: the servers under test are single-core Python
 * programs (or thread-per-connection programs bound by one GIL) on a 2-core
 * machine.  A Python client would be the bottleneck; a multi-threaded client
 * would take the server's core.  One epoll thread keeps the client to one
 * core, and it reports its own CPU time (getrusage) so every figure can be
 * printed beside the generator's CPU share: a share near 100% of a core
 * means the figure measures the generator, not the server.
 *
 * Safety: the target is always 127.0.0.1 (there is no host option), every
 * run is bounded in time (-d plus a grace period, a setup timeout) and in
 * count (-n), and the process exits by itself.
 *
 * Modes
 *   pingpong  Open -c connections (at most -k connects in flight, each
 *             confirmed by one echoed line, so a small listen backlog does
 *             not turn setup into SYN retransmits), then keep -a of them
 *             active: each active slot sends one line, waits for the whole
 *             echo, and sends the next.  With -a < -c, a slot moves on to the
 *             connection -a further along after each round trip, so every
 *             connection is touched in turn while the rest stay idle: this
 *             is the "hold N mostly idle connections, ping a sample" mode.
 *   connrate  Keep -c connection attempts in flight: connect, send one line,
 *             read the echo, close, start again.  Reports completed
 *             connections/s, connect-time percentiles and the worst connect
 *             (which shows listen-backlog overflow: a dropped SYN costs a
 *             1 s retransmit), including attempts still in flight when the
 *             measured window ends (followed for up to -g seconds).
 *
 * Output: one JSON object on stdout.  Diagnostics go to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 4096
#define MAX_EVENTS 512

enum mode { MODE_PINGPONG, MODE_CONNRATE };
enum state { ST_CLOSED, ST_CONNECTING, ST_SENT, ST_IDLE };

struct conn {
    int fd;
    enum state state;
    int slot;           /* active slot using this connection, or -1 */
    size_t got;         /* bytes of the echo received so far */
    uint64_t t_connect; /* when connect() was called */
    uint64_t t_sent;    /* when the current line was sent */
};

/* A growable array of nanosecond samples, capped so memory stays bounded. */
struct samples {
    uint64_t *v;
    size_t n, cap, limit;
};

struct opts {
    enum mode mode;
    int port;
    int conns;
    int active;
    double duration;
    double warmup;
    int setup_inflight;
    double setup_timeout;
    double setup_stall;
    double grace;
    long max_ops;
    int line_len;
    int server_pid;
};

static int epfd = -1;
static char line[MAX_LINE];
static struct sockaddr_in target;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t sec_to_ns(double s) { return (uint64_t)(s * 1e9); }

static void die(const char *what)
{
    /* Still print a JSON object so the harness can record why. */
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(errno));
    fflush(stdout);
    exit(2);
}

static void fail(const char *what)
{
    printf("{\"error\": \"%s\"}\n", what);
    fflush(stdout);
    exit(2);
}

static void push(struct samples *s, uint64_t x)
{
    if (s->n == s->cap) {
        if (s->cap >= s->limit)
            return;
        size_t cap = s->cap ? s->cap * 2 : 65536;
        if (cap > s->limit)
            cap = s->limit;
        uint64_t *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            die("realloc");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples, in microseconds. */
static double pct_us(const struct samples *s, double p)
{
    if (s->n == 0)
        return -1;
    size_t rank = (size_t)(p * (double)s->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return (double)s->v[rank - 1] / 1e3;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/*
 * CPU seconds used so far by the server process (all its threads, living and
 * exited), from fields 14 and 15 of /proc/PID/stat.  Clock-tick resolution
 * (10 ms) is fine over a run of a second or more.  Returns -1 if unknown.
 */
static double server_cpu_seconds(int pid)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The command name may hold spaces; fields resume after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long utime = 0, stime = 0;
    /* After ')': state(3) ppid(4) ... utime(14) stime(15). */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * Jiffies the whole machine spent busy, and in all, from the first line of
 * /proc/stat.  The generator's and the server's own CPU times miss the
 * kernel's network work when it is deferred to ksoftirqd (it then belongs
 * to neither process), so the machine's busy share is the figure that shows
 * whether the box itself was saturated.  Busy is everything but idle and
 * iowait; steal is counted as busy (the vCPU was not ours to use).
 */
static void machine_jiffies(uint64_t *busy, uint64_t *total)
{
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return;
    unsigned long long v[8] = {0};
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
               &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
        for (int i = 0; i < 8; i++)
            *total += v[i];
        *busy = *total - v[3] - v[4];
    }
    fclose(f);
}

/* Busy share of the machine (all cores) between two machine_jiffies(). */
static double machine_share(uint64_t b0, uint64_t t0, uint64_t b1, uint64_t t1)
{
    return t1 > t0 ? (double)(b1 - b0) / (double)(t1 - t0) : -1;
}

/* Resident memory (kB) and thread count of the server, from /proc/PID/status. */
static void server_status(int pid, long *rss_kb, long *threads)
{
    *rss_kb = -1;
    *threads = -1;
    if (pid <= 0)
        return;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(buf, sizeof buf, f)) {
        sscanf(buf, "VmRSS: %ld", rss_kb);
        sscanf(buf, "Threads: %ld", threads);
    }
    fclose(f);
}

static void raise_nofile(void)
{
    /* 10,000 held connections need more than the usual soft limit of 1024. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void ep_ctl(int op, int fd, uint32_t events, uint32_t idx)
{
    struct epoll_event ev = {.events = events, .data.u32 = idx};
    if (epoll_ctl(epfd, op, fd, &ev) < 0)
        die("epoll_ctl");
}

/*
 * Start a non-blocking connect.  Returns 0 on success (connect in progress or
 * done), or the errno of a synchronous failure (e.g. EADDRNOTAVAIL when the
 * ephemeral ports are used up), after closing the socket.
 *
 * `short_lived` is the connection-rate mode, where every system call per
 * connection is generator CPU taken from the server's measurement: no
 * TCP_NODELAY (one write per connection, which Nagle never delays), and an
 * edge-triggered registration for both directions up front, so that moving
 * from "connecting" to "awaiting the echo" needs no epoll_ctl(MOD).
 */
static int start_connect(struct conn *c, uint32_t idx, int short_lived)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (!short_lived) {
        /* One small write per round trip: Nagle would only add delay. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->t_connect = now_ns();
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0 &&
        errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        c->fd = -1;
        c->state = ST_CLOSED;
        return err;
    }
    c->fd = fd;
    c->state = ST_CONNECTING;
    c->got = 0;
    ep_ctl(EPOLL_CTL_ADD, fd,
           short_lived ? (EPOLLIN | EPOLLOUT | EPOLLET) : EPOLLOUT, idx);
    return 0;
}

/* Pending socket error of a connecting socket (0 if connected). */
static int connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

/*
 * Send one line.  In these modes a connection never has more than one line
 * outstanding, so its (empty) send buffer always takes all of it; a short
 * write would mean something is badly wrong, and is reported as an error.
 */
static int send_line(struct conn *c, int line_len)
{
    c->got = 0;
    c->t_sent = now_ns();
    ssize_t n = send(c->fd, line, (size_t)line_len, MSG_NOSIGNAL);
    if (n != line_len)
        return -1;
    c->state = ST_SENT;
    return 0;
}

/*
 * Read what has arrived of the echo.  Returns 1 when the whole line is in,
 * 0 if more is to come, -1 on EOF or error.  It asks for no more than the
 * rest of the line: then a complete echo costs one recv(), not a second one
 * that only returns EAGAIN (at 150k round trips/s that extra call is a fifth
 * of this generator's CPU time).  The echo servers never send more than
 * they were sent, so nothing is left unread.
 */
static int read_echo(struct conn *c, int line_len)
{
    char buf[MAX_LINE];
    for (;;) {
        ssize_t n = recv(c->fd, buf, (size_t)line_len - c->got, 0);
        if (n > 0) {
            c->got += (size_t)n;
            if (c->got == (size_t)line_len)
                return 1;
            continue;
        }
        if (n == 0)
            return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        if (errno == EINTR)
            continue;
        return -1;
    }
}

static void print_json_common(const struct opts *o, double elapsed, long ops,
                              struct samples *lat, double cpu, double srv_cpu,
                              double machine)
{
    qsort(lat->v, lat->n, sizeof *lat->v, cmp_u64);
    printf("\"mode\": \"%s\", \"conns\": %d, \"active\": %d, "
           "\"elapsed_s\": %.6f, \"ops\": %ld, \"rate\": %.3f, "
           "\"lat_p50_us\": %.1f, \"lat_p90_us\": %.1f, \"lat_p99_us\": %.1f, "
           "\"lat_p999_us\": %.1f, \"lat_max_us\": %.1f, "
           "\"cpu_s\": %.4f, \"cpu_share\": %.4f, "
           "\"server_cpu_s\": %.4f, \"server_cpu_share\": %.4f, "
           "\"machine_busy_share\": %.4f, \"cores\": %ld",
           o->mode == MODE_PINGPONG ? "pingpong" : "connrate", o->conns,
           o->active, elapsed, ops, elapsed > 0 ? (double)ops / elapsed : 0,
           pct_us(lat, 0.50), pct_us(lat, 0.90), pct_us(lat, 0.99),
           pct_us(lat, 0.999), pct_us(lat, 1.0), cpu,
           elapsed > 0 ? cpu / elapsed : 0, srv_cpu,
           (srv_cpu >= 0 && elapsed > 0) ? srv_cpu / elapsed : -1, machine,
           sysconf(_SC_NPROCESSORS_ONLN));
}

/* ------------------------------------------------------------------ */

static int run_pingpong(const struct opts *o)
{
    int n = o->conns, active = o->active;
    struct conn *cs = calloc((size_t)n, sizeof *cs);
    if (!cs)
        die("calloc");
    for (int i = 0; i < n; i++) {
        cs[i].fd = -1;
        cs[i].slot = -1;
    }
    struct samples lat = {.limit = (size_t)o->max_ops};
    struct epoll_event evs[MAX_EVENTS];

    /* --- setup: open every connection, each confirmed by one echo --- */
    uint64_t t0 = now_ns();
    uint64_t setup_deadline = t0 + sec_to_ns(o->setup_timeout);
    int next = 0, inflight = 0, established = 0;
    uint64_t worst_setup_connect = 0;
    uint64_t t_progress = t0;
    while (established < n) {
        while (inflight < o->setup_inflight && next < n) {
            int err = start_connect(&cs[next], (uint32_t)next, 0);
            if (err) {
                errno = err;
                die("connect during setup");
            }
            next++;
            inflight++;
        }
        uint64_t t = now_ns();
        if (t > setup_deadline) {
            printf("{\"error\": \"setup timed out: %d of %d connections "
                   "established in %.1f s\"}\n",
                   established, n, o->setup_timeout);
            return 2;
        }
        /*
         * No connection completed for -S seconds: the server has stopped
         * taking new connections (a worker pool smaller than the connection
         * count does that by design), so it cannot hold this many.  Longer
         * than a SYN retransmit (1 s, then 3 s), so a slow accept is not
         * taken for a stop.
         */
        if (t - t_progress > sec_to_ns(o->setup_stall)) {
            printf("{\"error\": \"setup stalled: %d of %d connections "
                   "established, none for %.1f s\"}\n",
                   established, n, o->setup_stall);
            return 2;
        }
        int k = epoll_wait(epfd, evs, MAX_EVENTS, 100);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int e = 0; e < k; e++) {
            struct conn *c = &cs[evs[e].data.u32];
            if (c->state == ST_CONNECTING) {
                if (connect_result(c->fd) != 0)
                    fail("connect failed during setup (server not listening?)");
                uint64_t ct = now_ns() - c->t_connect;
                if (ct > worst_setup_connect)
                    worst_setup_connect = ct;
                ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN, evs[e].data.u32);
                if (send_line(c, o->line_len) < 0)
                    fail("short write during setup");
            } else if (c->state == ST_SENT) {
                int r = read_echo(c, o->line_len);
                if (r < 0)
                    fail("bad echo or connection closed during setup");
                if (r == 1) {
                    c->state = ST_IDLE;
                    inflight--;
                    established++;
                    t_progress = now_ns();
                }
            }
        }
    }
    uint64_t t_setup_done = now_ns();

    /* --- active phase: `active` slots ping-pong, rotating over all --- */
    uint64_t t_measure = t_setup_done + sec_to_ns(o->warmup);
    uint64_t t_end = t_measure + sec_to_ns(o->duration);
    long ops = 0, errors = 0;
    int measuring = 0, outstanding = 0;
    uint64_t t_stop = t_end; /* earlier if the -n cap is reached */
    double cpu0 = 0, srv0 = 0, cpu1 = 0, srv1 = 0;
    uint64_t mb0 = 0, mt0 = 0, mb1 = 0, mt1 = 0;
    for (int s = 0; s < active; s++) {
        cs[s].slot = s;
        if (send_line(&cs[s], o->line_len) < 0)
            fail("short write");
        outstanding++;
    }
    while (outstanding > 0) {
        uint64_t t = now_ns();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            cpu0 = cpu_seconds();
            srv0 = server_cpu_seconds(o->server_pid);
            machine_jiffies(&mb0, &mt0);
        }
        /* At the end, stop: the lines still in flight are not counted. */
        if (t >= t_end)
            break;
        if (ops >= o->max_ops) {
            t_stop = t;
            break;
        }
        int k = epoll_wait(epfd, evs, MAX_EVENTS, 50);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int e = 0; e < k; e++) {
            uint32_t idx = evs[e].data.u32;
            struct conn *c = &cs[idx];
            int r = read_echo(c, o->line_len);
            if (r < 0) {
                /* An idle connection closed by the server, or a bad echo. */
                errors++;
                if (c->state == ST_SENT)
                    outstanding--;
                c->state = ST_CLOSED;
                close(c->fd);
                c->fd = -1;
                continue;
            }
            if (r == 0 || c->state != ST_SENT)
                continue;
            uint64_t done = now_ns();
            if (measuring && done <= t_end) {
                push(&lat, done - c->t_sent);
                ops++;
            }
            c->state = ST_IDLE;
            /*
             * Next connection for this slot: the one `active` further on, so
             * that over the run every held connection gets pinged.  If that
             * one is busy (another slot got there first, when `active` does
             * not divide the count) or was closed, stay put this time.
             */
            uint32_t nidx = idx;
            if (active < n) {
                nidx = (idx + (uint32_t)active) % (uint32_t)n;
                if (cs[nidx].state != ST_IDLE)
                    nidx = idx;
                int slot = c->slot;
                c->slot = -1;
                cs[nidx].slot = slot;
            }
            if (send_line(&cs[nidx], o->line_len) < 0) {
                errors++;
                outstanding--;
            }
        }
        if (errors > n) /* everything is failing: no point going on */
            break;
    }
    cpu1 = cpu_seconds();
    srv1 = server_cpu_seconds(o->server_pid);
    machine_jiffies(&mb1, &mt1);
    /*
     * Collect the echoes still in flight (for at most -g seconds) before
     * closing: closing a socket with unread data sends RST instead of FIN,
     * and a threaded server would log a ConnectionResetError traceback for
     * every connection.
     */
    uint64_t t_drain_end = now_ns() + sec_to_ns(o->grace);
    while (outstanding > 0 && now_ns() < t_drain_end) {
        int k = epoll_wait(epfd, evs, MAX_EVENTS, 50);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int e = 0; e < k; e++) {
            struct conn *c = &cs[evs[e].data.u32];
            if (c->state != ST_SENT)
                continue;
            int r = read_echo(c, o->line_len);
            if (r != 0) {
                c->state = ST_IDLE;
                outstanding--;
            }
        }
    }
    if (!measuring)
        fail("no measurement window (all connections failed)");
    double elapsed = (double)(t_stop - t_measure) / 1e9;
    long rss_kb, threads;
    server_status(o->server_pid, &rss_kb, &threads);
    printf("{");
    print_json_common(o, elapsed, ops, &lat, cpu1 - cpu0,
                      srv0 >= 0 && srv1 >= 0 ? srv1 - srv0 : -1,
                      machine_share(mb0, mt0, mb1, mt1));
    printf(", \"setup_s\": %.4f, \"setup_worst_connect_ms\": %.3f, "
           "\"errors\": %ld, \"server_rss_kb\": %ld, \"server_threads\": %ld}\n",
           (double)(t_setup_done - t0) / 1e9,
           (double)worst_setup_connect / 1e6, errors, rss_kb, threads);
    for (int i = 0; i < n; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    free(cs);
    free(lat.v);
    return 0;
}

/* ------------------------------------------------------------------ */

static int run_connrate(const struct opts *o)
{
    int n = o->conns;
    struct conn *cs = calloc((size_t)n, sizeof *cs);
    if (!cs)
        die("calloc");
    struct samples lat = {.limit = (size_t)o->max_ops};
    struct samples cts = {.limit = (size_t)o->max_ops};
    struct epoll_event evs[MAX_EVENTS];
    long ops = 0, errors = 0, late = 0, sync_fail = 0;
    uint64_t worst_connect = 0;
    int open_slots = 0;

    uint64_t t0 = now_ns();
    uint64_t t_end = t0 + sec_to_ns(o->duration);
    uint64_t t_hard = t_end + sec_to_ns(o->grace);
    double cpu0 = cpu_seconds(), cpu1 = 0;
    double srv0 = server_cpu_seconds(o->server_pid), srv1 = 0;
    uint64_t mb0, mt0, mb1 = 0, mt1 = 0;
    machine_jiffies(&mb0, &mt0);
    int ended = 0;

    for (int i = 0; i < n; i++)
        cs[i].state = ST_CLOSED;
    for (;;) {
        uint64_t t = now_ns();
        if (!ended && (t >= t_end || ops >= o->max_ops)) {
            ended = 1;
            t_end = t; /* the window closes now (earlier if -n was hit) */
            cpu1 = cpu_seconds();
            srv1 = server_cpu_seconds(o->server_pid);
            machine_jiffies(&mb1, &mt1);
        }
        if (ended && (open_slots == 0 || t >= t_hard))
            break;
        /* Refill idle slots while the window is open. */
        int idle_left = 0;
        if (!ended) {
            for (int i = 0; i < n; i++) {
                if (cs[i].state != ST_CLOSED)
                    continue;
                int err = start_connect(&cs[i], (uint32_t)i, 1);
                if (err) {
                    /* e.g. EADDRNOTAVAIL: ephemeral ports all in TIME_WAIT */
                    sync_fail++;
                    idle_left = 1;
                } else {
                    open_slots++;
                }
            }
        }
        if (sync_fail > 100000)
            fail("too many synchronous connect failures");
        int k = epoll_wait(epfd, evs, MAX_EVENTS, idle_left ? 1 : 50);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int e = 0; e < k; e++) {
            struct conn *c = &cs[evs[e].data.u32];
            uint64_t done = now_ns();
            uint32_t ev = evs[e].events;
            if (c->state == ST_CONNECTING) {
                /* Writable and no error flag: connected (no SO_ERROR call). */
                if (ev & (EPOLLERR | EPOLLHUP)) {
                    errors++;
                    close(c->fd);
                    c->state = ST_CLOSED;
                    open_slots--;
                    continue;
                }
                if (!(ev & EPOLLOUT))
                    continue;
                uint64_t ct = done - c->t_connect;
                push(&cts, ct);
                if (ct > worst_connect)
                    worst_connect = ct;
                if (send_line(c, o->line_len) < 0) {
                    errors++;
                    close(c->fd);
                    c->state = ST_CLOSED;
                    open_slots--;
                }
                continue;
            }
            /* An edge for write space (the ACK of our line) is not news. */
            if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            int r = read_echo(c, o->line_len);
            if (r == 0)
                continue;
            if (r < 0) {
                errors++;
            } else if (done <= t_end) {
                push(&lat, done - c->t_connect);
                ops++;
            } else {
                late++; /* finished after the window: not in the rate */
            }
            close(c->fd); /* also removes it from the epoll set */
            c->state = ST_CLOSED;
            open_slots--;
        }
    }
    double elapsed = (double)(t_end - t0) / 1e9;
    qsort(cts.v, cts.n, sizeof *cts.v, cmp_u64);
    printf("{");
    print_json_common(o, elapsed, ops, &lat, cpu1 - cpu0,
                      srv0 >= 0 && srv1 >= 0 ? srv1 - srv0 : -1,
                      machine_share(mb0, mt0, mb1, mt1));
    /* Attempts still connecting at the hard deadline waited at least this. */
    uint64_t t_stop = now_ns();
    long unfinished = 0;
    for (int i = 0; i < n; i++) {
        if (cs[i].state == ST_CLOSED)
            continue;
        unfinished++;
        if (cs[i].state == ST_CONNECTING &&
            t_stop - cs[i].t_connect > worst_connect)
            worst_connect = t_stop - cs[i].t_connect;
        close(cs[i].fd);
    }
    printf(", \"connect_p50_us\": %.1f, \"connect_p99_us\": %.1f, "
           "\"connect_max_ms\": %.3f, \"errors\": %ld, "
           "\"connect_sync_failures\": %ld, \"late\": %ld, "
           "\"unfinished\": %ld}\n",
           pct_us(&cts, 0.50), pct_us(&cts, 0.99),
           (double)worst_connect / 1e6, errors, sync_fail, late, unfinished);
    free(cs);
    free(lat.v);
    free(cts.v);
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen -m pingpong|connrate -p PORT [-c CONNS] "
            "[-a ACTIVE] [-d SECONDS] [-w WARMUP] [-k SETUP_INFLIGHT] "
            "[-s SETUP_TIMEOUT] [-S SETUP_STALL] [-g GRACE] [-n MAX_OPS] [-l LINE_LEN] "
            "[-P SERVER_PID]\n"
            "Target is always 127.0.0.1.\n");
    exit(64);
}

int main(int argc, char **argv)
{
    struct opts o = {
        .mode = MODE_PINGPONG, .port = 0, .conns = 1, .active = 0,
        .duration = 2.0, .warmup = 0.2, .setup_inflight = 8,
        .setup_timeout = 60.0, .setup_stall = 5.0, .grace = 8.0, .max_ops = 20000000,
        .line_len = 64, .server_pid = 0,
    };
    int opt;
    while ((opt = getopt(argc, argv, "m:p:c:a:d:w:k:s:S:g:n:l:P:")) != -1) {
        switch (opt) {
        case 'm':
            if (strcmp(optarg, "pingpong") == 0)
                o.mode = MODE_PINGPONG;
            else if (strcmp(optarg, "connrate") == 0)
                o.mode = MODE_CONNRATE;
            else
                usage();
            break;
        case 'p': o.port = atoi(optarg); break;
        case 'c': o.conns = atoi(optarg); break;
        case 'a': o.active = atoi(optarg); break;
        case 'd': o.duration = atof(optarg); break;
        case 'w': o.warmup = atof(optarg); break;
        case 'k': o.setup_inflight = atoi(optarg); break;
        case 's': o.setup_timeout = atof(optarg); break;
        case 'S': o.setup_stall = atof(optarg); break;
        case 'g': o.grace = atof(optarg); break;
        case 'n': o.max_ops = atol(optarg); break;
        case 'l': o.line_len = atoi(optarg); break;
        case 'P': o.server_pid = atoi(optarg); break;
        default: usage();
        }
    }
    if (o.port <= 0 || o.port > 65535 || o.conns < 1 || o.conns > 1000000 ||
        o.line_len < 2 || o.line_len > MAX_LINE || o.duration <= 0 ||
        o.duration > 600 || o.setup_inflight < 1 || o.max_ops < 1)
        usage();
    if (o.active <= 0 || o.active > o.conns)
        o.active = o.conns;

    /* 63 printable bytes and a newline: a line a line-oriented handler reads. */
    for (int i = 0; i < o.line_len - 1; i++)
        line[i] = (char)('a' + i % 26);
    line[o.line_len - 1] = '\n';

    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)o.port);
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* loopback only */

    raise_nofile();
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    return o.mode == MODE_PINGPONG ? run_pingpong(&o) : run_connrate(&o);
}
