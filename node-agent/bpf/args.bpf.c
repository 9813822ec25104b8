// SPDX-License-Identifier: MIT OR GPL-2.0
//
// heisen's argument recorder: the strings and socket addresses a syscall was given, read from
// the calling process's memory at the time of the call.
//
// Each recorded syscall has its own pair of programs on its own tracepoints
// (syscalls/sys_enter_NAME and sys_exit_NAME), so a syscall heisen does not record pays no BPF
// dispatch at all (a program on raw_syscalls would run for every syscall on the machine).
//
// - At entry the program keeps the argument pointers and the entry time, per thread.
// - At exit it reads the strings and the address: by then the kernel itself has read them, so
//   their pages are faulted in (a string read at entry can come back empty). Addresses that
//   the call fills in (accept, recvfrom) exist only then. The record carries the entry time,
//   so it sorts before the tracefs exit event of the same call.
// - execve/execveat are read at entry: after a successful exec the old memory is gone.
//
// Records go to a BPF ring buffer without wake-ups; the agent drains it on its 1 ms timer,
// beside the tracefs per-CPU buffers. What does not fit is counted, never dropped in silence.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define STR_MAX 256
#define ADDR_MAX 128
#define NONE 7

#include "select.h"

// tracepoint syscalls/sys_enter_*: the common header, the syscall number, six arguments.
struct sys_enter_ctx {
    __u64 common;
    __s64 nr;
    __u64 args[6];
};

// tracepoint syscalls/sys_exit_*: the common header, the syscall number, the result.
struct sys_exit_ctx {
    __u64 common;
    __s64 nr;
    __s64 ret;
};

// One record. Strings and the address are `__data_loc` fields as tracefs writes them:
// (length << 16) | offset from the record's start; length 0 when absent.
struct record {
    __u64 stamp;      // CLOCK_MONOTONIC at entry (the tracefs instance's clock)
    __u64 pid_tgid;   // thread id in the low half
    __u32 nr;         // syscall number
    __u32 flags;      // 1: read at exit; 2: argv cut short (too many or too long arguments)
    __u32 loc[3];
    __u32 addr_loc;
    char str[3][STR_MAX];
    __u8 addr[ADDR_MAX];
};

// What entry keeps for exit, per thread.
struct pending {
    __u64 stamp;
    __u64 ptr[3];
    __u64 addr;
    __u64 addrlen;      // a length, or a pointer to one (accept, recvfrom)
    __u32 addrlen_ptr;
    __u32 nr;
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 16 << 20);
} records SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, struct pending);
} pending SEC(".maps");

// [0]: records the ring could not take; [1]: calls whose pending slot could not be kept.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u64);
} lost SEC(".maps");

static __always_inline void count_lost(__u32 which)
{
    __u64 *n = bpf_map_lookup_elem(&lost, &which);
    if (n)
        __sync_fetch_and_add(n, 1);
}

static __always_inline void read_str(struct record *r, int i, __u64 ptr)
{
    r->loc[i] = 0;
    if (!ptr)
        return;
    long n = bpf_probe_read_user_str(r->str[i], STR_MAX, (const void *)ptr);
    if (n > 0)
        r->loc[i] = ((__u32)n << 16) | (__u32)(__builtin_offsetof(struct record, str) + i * STR_MAX);
}

static __always_inline void read_addr(struct record *r, __u64 ptr, __u64 len)
{
    r->addr_loc = 0;
    if (!ptr || len == 0)
        return;
    if (len > ADDR_MAX)
        len = ADDR_MAX;
    // A constant size reads no further than the kernel's own copy would (sockaddr_in6 is 28).
    if (len >= 28) {
        if (bpf_probe_read_user(r->addr, 28, (const void *)ptr) == 0)
            r->addr_loc = (28u << 16) | (__u32)__builtin_offsetof(struct record, addr);
        if (len > 28 && bpf_probe_read_user(r->addr + 28, ADDR_MAX - 28, (const void *)(ptr + 28)) == 0)
            r->addr_loc = ((__u32)len << 16) | (__u32)__builtin_offsetof(struct record, addr);
    } else if (len >= 16) {
        if (bpf_probe_read_user(r->addr, 16, (const void *)ptr) == 0)
            r->addr_loc = (16u << 16) | (__u32)__builtin_offsetof(struct record, addr);
    } else if (len >= 2) {
        if (bpf_probe_read_user(r->addr, 2, (const void *)ptr) == 0)
            r->addr_loc = (2u << 16) | (__u32)__builtin_offsetof(struct record, addr);
    }
}

// Entry: keep the pointers (argument indexes s0..s2 and a, NONE when absent).
static __always_inline int keep(struct sys_enter_ctx *ctx, int s0, int s1, int s2, int a, int alen, int alen_ptr)
{
    if (!selected())
        return 0;
    struct pending p = {};
    p.stamp = bpf_ktime_get_ns();
    p.nr = (__u32)ctx->nr;
    if (s0 != NONE) p.ptr[0] = ctx->args[s0];
    if (s1 != NONE) p.ptr[1] = ctx->args[s1];
    if (s2 != NONE) p.ptr[2] = ctx->args[s2];
    if (a != NONE) p.addr = ctx->args[a];
    if (alen != NONE) p.addrlen = ctx->args[alen];
    p.addrlen_ptr = alen_ptr;
    __u64 id = bpf_get_current_pid_tgid();
    if (bpf_map_update_elem(&pending, &id, &p, BPF_ANY) != 0)
        count_lost(1);
    return 0;
}

// Exit: read what entry kept and queue the record.
static __always_inline int emit(struct sys_exit_ctx *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    struct pending *p = bpf_map_lookup_elem(&pending, &id);
    if (!p)
        return 0;
    struct record *r = bpf_ringbuf_reserve(&records, sizeof(struct record), 0);
    if (!r) {
        count_lost(0);
        bpf_map_delete_elem(&pending, &id);
        return 0;
    }
    r->stamp = p->stamp;
    r->pid_tgid = id;
    r->nr = p->nr;
    r->flags = 1;
    read_str(r, 0, p->ptr[0]);
    read_str(r, 1, p->ptr[1]);
    read_str(r, 2, p->ptr[2]);
    __u64 len = p->addrlen;
    if (p->addrlen_ptr) {
        __u32 n = 0;
        if (!p->addrlen || bpf_probe_read_user(&n, sizeof(n), (const void *)p->addrlen) != 0)
            n = 0;
        len = ctx->ret >= 0 ? n : 0;
    }
    read_addr(r, p->addr, len);
    bpf_map_delete_elem(&pending, &id);
    bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
    return 0;
}

#define ARGV_MAX 16
#define ARG_LEN 128
#define ARGV_BYTES (2 * STR_MAX)

// execve/execveat: the path, and argv packed NUL-separated into the space of strings 1 and 2
// (at most ARGV_MAX arguments of ARG_LEN bytes each), read at entry: a successful exec replaces
// the memory they are in.
static __always_inline int emit_now(struct sys_enter_ctx *ctx, int s0, int argv_at)
{
    if (!selected())
        return 0;
    struct record *r = bpf_ringbuf_reserve(&records, sizeof(struct record), 0);
    if (!r) {
        count_lost(0);
        return 0;
    }
    r->stamp = bpf_ktime_get_ns();
    r->pid_tgid = bpf_get_current_pid_tgid();
    r->nr = (__u32)ctx->nr;
    r->flags = 0;
    read_str(r, 0, ctx->args[s0]);
    const char *const *argv = (const char *const *)ctx->args[argv_at];
    char *base = r->str[1];
    __u32 off = 0;
    int i = 0;
    for (; i < ARGV_MAX && argv; i++) {
        const char *arg = 0;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) != 0 || !arg)
            break;
        if (off > ARGV_BYTES - ARG_LEN) {
            r->flags |= 2;
            break;
        }
        long n = bpf_probe_read_user_str(base + off, ARG_LEN, arg);
        if (n <= 0)
            break;
        if (n == ARG_LEN)
            r->flags |= 2;
        off += (__u32)n;
    }
    if (i == ARGV_MAX && argv) {
        const char *more = 0;
        if (bpf_probe_read_user(&more, sizeof(more), &argv[ARGV_MAX]) == 0 && more)
            r->flags |= 2;
    }
    r->loc[1] = off ? (off << 16) | (__u32)(__builtin_offsetof(struct record, str) + STR_MAX) : 0;
    r->loc[2] = 0;
    r->addr_loc = 0;
    bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
    return 0;
}

// One pair of programs per syscall: strings at argument indexes s0..s2, an address at a with
// its length at alen (a value, or a pointer when alen_ptr).
#define CALL(name, s0, s1, s2, a, alen, alen_ptr)                                  \
    SEC("tracepoint/syscalls/sys_enter_" #name)                                    \
    int enter_##name(struct sys_enter_ctx *ctx)                                    \
    {                                                                              \
        return keep(ctx, s0, s1, s2, a, alen, alen_ptr);                           \
    }                                                                              \
    SEC("tracepoint/syscalls/sys_exit_" #name)                                     \
    int exit_##name(struct sys_exit_ctx *ctx) { return emit(ctx); }

#define PATHS(name, s0, s1, s2) CALL(name, s0, s1, s2, NONE, NONE, 0)

PATHS(open, 0, NONE, NONE)
PATHS(openat, 1, NONE, NONE)
PATHS(openat2, 1, NONE, NONE)
PATHS(creat, 0, NONE, NONE)
PATHS(rename, 0, 1, NONE)
PATHS(renameat, 1, 3, NONE)
PATHS(renameat2, 1, 3, NONE)
PATHS(unlink, 0, NONE, NONE)
PATHS(unlinkat, 1, NONE, NONE)
PATHS(mkdir, 0, NONE, NONE)
PATHS(mkdirat, 1, NONE, NONE)
PATHS(rmdir, 0, NONE, NONE)
PATHS(link, 0, 1, NONE)
PATHS(linkat, 1, 3, NONE)
PATHS(symlink, 0, 1, NONE)
PATHS(symlinkat, 0, 2, NONE)
PATHS(truncate, 0, NONE, NONE)
PATHS(chmod, 0, NONE, NONE)
PATHS(fchmodat, 1, NONE, NONE)
PATHS(chown, 0, NONE, NONE)
PATHS(lchown, 0, NONE, NONE)
PATHS(fchownat, 1, NONE, NONE)
PATHS(mount, 0, 1, 2)
PATHS(umount, 0, NONE, NONE)
CALL(connect, NONE, NONE, NONE, 1, 2, 0)
CALL(bind, NONE, NONE, NONE, 1, 2, 0)
CALL(sendto, NONE, NONE, NONE, 4, 5, 0)
CALL(recvfrom, NONE, NONE, NONE, 4, 5, 1)
CALL(accept, NONE, NONE, NONE, 1, 2, 1)
CALL(accept4, NONE, NONE, NONE, 1, 2, 1)

SEC("tracepoint/syscalls/sys_enter_execve")
int enter_execve(struct sys_enter_ctx *ctx) { return emit_now(ctx, 0, 1); }

SEC("tracepoint/syscalls/sys_enter_execveat")
int enter_execveat(struct sys_enter_ctx *ctx) { return emit_now(ctx, 1, 2); }
