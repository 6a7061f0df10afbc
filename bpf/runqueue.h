/* Shared by runqueue.bpf.c and src/ebpf.rs, which mirrors it: change both. */
#ifndef SOJOURN_RUNQUEUE_H
#define SOJOURN_RUNQUEUE_H

/* Slot 0 counts waits under 2^-30 s; slot s > 0 waits in
 * (2^(s-31), 2^(s-30)] seconds; the last slot everything longer. */
#define RUNQUEUE_SLOTS 50
/* Longer waits are counted as this (2^43 ns, 2.4 hours): keeps the
 * conversion to 2^-30 s units from overflowing. */
#define RUNQUEUE_MAX_NS (1ULL << 43)

struct runqueue_histogram {
	__u64 slots[RUNQUEUE_SLOTS];
	__u64 sum_ns;
	__u64 missed;
};

#endif
