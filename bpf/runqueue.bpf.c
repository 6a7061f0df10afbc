// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/* Run-queue sojourn time: from the moment a task becomes runnable (woken,
 * newly forked, or preempted while still runnable) to the moment a CPU
 * switches to it, as a histogram per CPU in power-of-two buckets of
 * seconds (slots.h), and one per cgroup of the waiting task. */

#include "types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "slots.h"
#include "runqueue.h"

/* When each runnable task was enqueued, kept in the task itself (task
 * local storage: no table to fill, freed with the task, no hashing or
 * bucket lock on the scheduler's path); 0 while it is not waiting. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} enqueued SEC(".maps");

/* The histogram, one copy per CPU: only the CPU a task runs on writes its
 * copy, under its run-queue lock, so no update races another. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct runqueue_histogram);
} histogram SEC(".maps");

/* Per cgroup: the waits of its tasks, all CPUs together. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SOJOURN_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, struct timed_histogram);
} cgroups SEC(".maps");

/* Set by the loader: whether waits are counted per cgroup, and in which
 * hierarchy — the default (v2) one, or a v1 controller's (the cpu
 * controller's on a v1 host, whose unified hierarchy is empty), by its
 * index in the task's css_set. */
const volatile __u32 cgroup_mode = SOJOURN_CGROUPS_OFF;
const volatile __u32 cgroup_controller = 0;

/* The id (directory inode number) of the cgroup `p` is counted under; 0
 * when it cannot be read, or when it is the hierarchy's root, whose waits
 * no one reads (every cgroup series is a child's) and whose tasks — the
 * kernel's threads among them — switch most often. `p` comes typed from
 * the tracepoint, so the pointers are followed with plain loads (the
 * verifier guards each), not a helper call a hop: the scheduler's hottest
 * path runs this. */
static __always_inline __u64 task_cgroup(struct task_struct *p)
{
	struct css_set *set = p->cgroups;
	struct cgroup *cgrp = 0;

	if (!set)
		return 0;
	if (cgroup_mode == SOJOURN_CGROUPS_DEFAULT) {
		cgrp = set->dfl_cgrp;
	} else {
		struct cgroup_subsys_state *css;
		__u32 i = cgroup_controller;

		if (i >= SOJOURN_MAX_CONTROLLERS)
			return 0;
		css = set->subsys[i];
		if (!css)
			return 0;
		cgrp = css->cgroup;
	}
	if (!cgrp || cgrp->level == 0 || !cgrp->kn)
		return 0;
	return cgrp->kn->id;
}

/* One cgroup's waits are added to by every CPU its tasks run on. */
static __always_inline void count_cgroup(struct task_struct *p, __u32 slot, __u64 ns)
{
	struct timed_histogram *h, zero = {};
	__u64 id;

	if (cgroup_mode == SOJOURN_CGROUPS_OFF)
		return;
	id = task_cgroup(p);
	if (!id)
		return;
	h = lookup_or_init(&cgroups, &id, &zero);
	if (h)
		histogram_add_slot(h, slot, ns);
}

/* Now, by the clock of the run queue `p` is on. At each of these
 * tracepoints the scheduler has just updated that clock under the queue's
 * lock, so reading it costs a few loads where a clock read costs a
 * pvclock or TSC read and its arithmetic (tens of ns in a VM), twice a
 * wait. On kernels whose tasks do not reach their run queue this way
 * (no CONFIG_FAIR_GROUP_SCHED), the monotonic clock; the choice is made
 * at load time, so a wait's two ends are always read from the same
 * clock. 0: not known (this wait is not timed). */
static __always_inline __u64 now(struct task_struct *p)
{
	struct cfs_rq *cfs_rq = 0;
	struct rq *rq;

	if (!bpf_core_field_exists(p->se.cfs_rq) ||
	    !bpf_core_field_exists(cfs_rq->rq))
		return bpf_ktime_get_ns();
	cfs_rq = p->se.cfs_rq;
	if (!cfs_rq)
		return 0;
	rq = cfs_rq->rq;
	if (!rq)
		return 0;
	return rq->clock;
}

static __always_inline void enqueue(struct task_struct *p)
{
	__u64 *at;

	/* The idle task is never queued. */
	if (p->pid == 0)
		return;
	at = bpf_task_storage_get(&enqueued, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (at) {
		*at = now(p);
	} else {
		/* No memory for the task's slot, or the storage busy on this
		 * CPU (a nested program): this wait is not timed. */
		__u32 zero = 0;
		struct runqueue_histogram *h = bpf_map_lookup_elem(&histogram, &zero);

		if (h)
			h->missed++;
	}
}

static __always_inline void dequeue(struct task_struct *p)
{
	__u32 zero = 0;
	__u64 *at, ns;
	__u32 slot;
	struct runqueue_histogram *h;

	if (p->pid == 0)
		return;
	at = bpf_task_storage_get(&enqueued, p, 0, 0);
	if (!at || *at == 0)
		return;
	ns = now(p);
	/* A wait whose end is not known, or that ends before it began (the
	 * task moved to a CPU whose clock is behind): not timed. One that
	 * ends when it began is a wait of 0 (the scheduler skips updating a
	 * clock it has just updated), counted in slot 0, where the monotonic
	 * clock timed it in its lowest slots. */
	if (ns < *at) {
		*at = 0;
		return;
	}
	ns -= *at;
	*at = 0;
	h = bpf_map_lookup_elem(&histogram, &zero);
	if (!h)
		return;
	if (ns > SOJOURN_MAX_NS)
		ns = SOJOURN_MAX_NS;
	/* Found once, counted in both histograms. */
	slot = seconds_slot(ns);
	h->slots[slot]++;
	h->sum_ns += ns;
	count_cgroup(p, slot, ns);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	enqueue(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new, struct task_struct *p)
{
	enqueue(p);
	return 0;
}

static __always_inline bool still_runnable(struct task_struct *p)
{
	if (bpf_core_field_exists(p->__state))
		return p->__state == 0;
	return BPF_CORE_READ((struct task_struct___pre514 *)p, state) == 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	/* Switched out while runnable: it waits on the run queue again. */
	if (still_runnable(prev))
		enqueue(prev);
	dequeue(next);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
