// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/* Run-queue sojourn time: from the moment a task becomes runnable (woken,
 * newly forked, or preempted while still runnable) to the moment a CPU
 * switches to it, as a histogram per CPU in power-of-two buckets.
 *
 * Buckets are powers of two *seconds*, as a Prometheus native histogram of
 * schema 0 has them: bucket b counts waits in (2^(b-1), 2^b] seconds. The
 * wait is counted in units of 2^-30 s (0.93 ns), in which those bounds are
 * whole powers of two, so the bucket is the ceiling of the base-2 logarithm
 * and no bound is rounded. */

#include "types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

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

static __always_inline void enqueue(struct task_struct *p)
{
	__u64 *at;

	/* The idle task is never queued. */
	if (p->pid == 0)
		return;
	at = bpf_task_storage_get(&enqueued, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (at) {
		*at = bpf_ktime_get_ns();
	} else {
		/* No memory for the task's slot, or the storage busy on this
		 * CPU (a nested program): this wait is not timed. */
		__u32 zero = 0;
		struct runqueue_histogram *h = bpf_map_lookup_elem(&histogram, &zero);

		if (h)
			h->missed++;
	}
}

/* ceil(log2(x)) for x >= 1: 0 for 1, 1 for 2, 2 for 3 and 4, ... */
static __always_inline __u32 ceil_log2(__u64 x)
{
	__u32 r = 0;

	x -= 1;
	if (x >> 32) { x >>= 32; r += 32; }
	if (x >> 16) { x >>= 16; r += 16; }
	if (x >> 8) { x >>= 8; r += 8; }
	if (x >> 4) { x >>= 4; r += 4; }
	if (x >> 2) { x >>= 2; r += 2; }
	if (x >> 1) { x >>= 1; r += 1; }
	return r + (__u32)x;
}

static __always_inline void dequeue(struct task_struct *p)
{
	__u32 zero = 0, slot;
	__u64 *at, ns, units;
	struct runqueue_histogram *h;

	if (p->pid == 0)
		return;
	at = bpf_task_storage_get(&enqueued, p, 0, 0);
	if (!at || *at == 0)
		return;
	ns = bpf_ktime_get_ns() - *at;
	*at = 0;
	h = bpf_map_lookup_elem(&histogram, &zero);
	if (!h)
		return;
	if (ns > RUNQUEUE_MAX_NS)
		ns = RUNQUEUE_MAX_NS;
	/* 2^30 / 10^9 = 2^21 / 5^9, exactly; rounded up, as the ceiling of
	 * the logarithm of the rounded-up value is that of the exact one. */
	units = (ns * 2097152 + 1953124) / 1953125;
	slot = units == 0 ? 0 : ceil_log2(units) + 1;
	if (slot >= RUNQUEUE_SLOTS)
		slot = RUNQUEUE_SLOTS - 1;
	h->slots[slot]++;
	h->sum_ns += ns;
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
		return BPF_CORE_READ(p, __state) == 0;
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
