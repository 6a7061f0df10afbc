// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/* Block-layer sojourn times, per disk: how long each request waited before
 * the driver got it (insert -> issue) and how long the device took to
 * serve it (issue -> complete), so that a slow device is told from a deep
 * queue. Histograms in power-of-two buckets of seconds (slots.h). */

#include "types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "slots.h"
#include "block.h"

struct times {
	__u64 inserted;
	/* 0 until issued. */
	__u64 issued;
};

/* Each request in flight, by its address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BLOCK_MAX_INFLIGHT);
	__type(key, __u64);
	__type(value, struct times);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * BLOCK_MAX_DISKS);
	__type(key, struct block_key);
	__type(value, struct timed_histogram);
} histograms SEC(".maps");

/* Completions not counted: their disk found no room in `histograms`. */
SOJOURN_COUNTER(missed);

/* A new disk's histograms start from this. */
const struct timed_histogram empty = {};

static __always_inline __u32 disk_of(struct request *rq)
{
	struct request___old *old = (void *)rq;
	struct gendisk *disk;

	if (bpf_core_field_exists(old->rq_disk))
		disk = BPF_CORE_READ(old, rq_disk);
	else
		disk = BPF_CORE_READ(rq, q, disk);
	if (!disk)
		return 0;
	return ((__u32)BPF_CORE_READ(disk, major) << 20) | (__u32)BPF_CORE_READ(disk, first_minor);
}

static __always_inline int record(__u32 dev, __u32 phase, __u64 ns)
{
	struct block_key key = { .dev = dev, .phase = phase };
	/* Completions of one disk run on several CPUs at once. */
	struct timed_histogram *h = lookup_or_init(&histograms, &key, &empty);

	if (!h)
		return -1;
	histogram_add(h, ns);
	return 0;
}

SEC("tp_btf/block_rq_insert")
int BPF_PROG(block_rq_insert, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct times t = { .inserted = bpf_ktime_get_ns() };

	/* A requeued request is inserted again: its wait starts again. */
	bpf_map_update_elem(&inflight, &key, &t, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(block_rq_issue, struct request *rq)
{
	__u64 key = (__u64)rq, now = bpf_ktime_get_ns();
	struct times *t = bpf_map_lookup_elem(&inflight, &key);
	struct times straight = { .inserted = now, .issued = now };

	if (t) {
		t->issued = now;
		return 0;
	}
	/* Never inserted (no I/O scheduler, a free hardware queue): it
	 * waited for nothing. */
	bpf_map_update_elem(&inflight, &key, &straight, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(block_rq_complete, struct request *rq)
{
	__u64 key = (__u64)rq, now = bpf_ktime_get_ns();
	struct times *t = bpf_map_lookup_elem(&inflight, &key);
	__u32 dev;

	/* Issued before the program was attached, or evicted. */
	if (!t || !t->issued)
		return 0;
	dev = disk_of(rq);
	if (record(dev, BLOCK_QUEUED, t->issued - t->inserted) ||
	    record(dev, BLOCK_SERVED, now - t->issued))
		count_one(&missed);
	/* A request completed in parts is timed at its first part. */
	bpf_map_delete_elem(&inflight, &key);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
