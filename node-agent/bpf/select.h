// SPDX-License-Identifier: MIT OR GPL-2.0
//
// Which tasks heisen's BPF programs record, set by the loader before load:
// - target_cgroup: the capture's cgroup v2 (launched scope), or 0;
// - target_netns: the network namespace of a netns host (its inode number), or 0.
// A task is recorded when it matches both (0 matches every task). Without the netns check a
// netns host's programs would fire for every task on the machine, and an unrelated busy process
// would fill the rings the host's own calls need.
//
// The namespace is read from the current task with CO-RE: the structs below name only the
// fields used, and the loader relocates their offsets against the running kernel's BTF.

#include <bpf/bpf_core_read.h>

const volatile __u64 target_cgroup = 0;
const volatile __u64 target_netns = 0;

struct ns_common {
    unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
    struct ns_common ns;
} __attribute__((preserve_access_index));

struct nsproxy {
    struct net *net_ns;
} __attribute__((preserve_access_index));

struct task_struct {
    struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

static __always_inline int selected(void)
{
    if (target_cgroup != 0 && bpf_get_current_cgroup_id() != target_cgroup)
        return 0;
    if (target_netns == 0)
        return 1;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    // An exiting task has no nsproxy any more: the read fails, 0 matches nothing.
    __u64 inum = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
    return inum == target_netns;
}
