/* Shared by runqueue.bpf.c and src/ebpf.rs, which mirrors it: change both. */
#ifndef SOJOURN_RUNQUEUE_H
#define SOJOURN_RUNQUEUE_H

/* Slot 0 counts waits of 0 ns; slot s > 0 waits in (2^(s-32), 2^(s-31)]
 * seconds: native histogram bucket s - 31 of schema 0. */
#define RUNQUEUE_SLOTS 50
/* Longer waits are counted as this (2^42 ns, 73 minutes): keeps the
 * conversion to 2^-30 s units within 64 bits. */
#define RUNQUEUE_MAX_NS (1ULL << 42)

struct runqueue_histogram {
	__u64 slots[RUNQUEUE_SLOTS];
	__u64 sum_ns;
	__u64 missed;
};

#endif
