// SPDX-License-Identifier: MIT OR GPL-2.0
//
// heisen's opt-in write recorder: one record per write(2), made at the raw sys_exit tracepoint,
// where the task's saved registers still hold the arguments, so one record carries the call
// whole (fd, buffer, count and result) instead of tracefs's enter and exit events.
//
// A raw sys_exit program runs for every syscall on the machine (+195..+231 ns each, measured):
// that is why it is opt-in (`heisen capture --bpf-writes`). Selection is in the kernel: the
// capture's cgroup (launched scope), or every task (netns scope; the decoder keeps the host's).
// Records go to a ring buffer without wake-ups, stamped with CLOCK_MONOTONIC (the tracefs
// instance's clock); a record the ring cannot take is counted, never dropped in silence.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define NR_WRITE 1

#include "select.h"

// One record: the layout the agent's `write_format` reads.
struct record {
    __u64 stamp;
    __u64 pid_tgid;
    __u64 fd;
    __u64 buf;
    __u64 count;
    __s64 ret;
};

// x86_64 `struct pt_regs` from byte 96: dx, si, di, orig_ax are contiguous there.
#define REGS_DX 96
struct regs_tail {
    __u64 dx;
    __u64 si;
    __u64 di;
    __u64 orig_ax;
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 32 << 20);
} writes SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} lost SEC(".maps");

SEC("raw_tracepoint/sys_exit")
int on_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
    if (!selected())
        return 0;
    struct regs_tail regs;
    if (bpf_probe_read_kernel(&regs, sizeof(regs), (const void *)(ctx->args[0] + REGS_DX)) != 0)
        return 0;
    if (regs.orig_ax != NR_WRITE)
        return 0;
    struct record *r = bpf_ringbuf_reserve(&writes, sizeof(struct record), 0);
    if (!r) {
        __u32 key = 0;
        __u64 *n = bpf_map_lookup_elem(&lost, &key);
        if (n)
            __sync_fetch_and_add(n, 1);
        return 0;
    }
    r->stamp = bpf_ktime_get_ns();
    r->pid_tgid = bpf_get_current_pid_tgid();
    r->fd = regs.di;
    r->buf = regs.si;
    r->count = regs.dx;
    r->ret = (__s64)ctx->args[1];
    bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
    return 0;
}
