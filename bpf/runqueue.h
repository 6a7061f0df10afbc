/* Shared by runqueue.bpf.c and src/ebpf.rs, which mirrors it: change both. */
#ifndef SOJOURN_RUNQUEUE_H
#define SOJOURN_RUNQUEUE_H

struct runqueue_histogram {
	__u64 slots[SOJOURN_SLOTS];
	__u64 sum_ns;
	__u64 missed;
};

#endif
