/* Shared by block.bpf.c and src/ebpf.rs, which mirrors it: change both. */
#ifndef SOJOURN_BLOCK_H
#define SOJOURN_BLOCK_H

/* The two times of a request: queued (inserted into the I/O scheduler or
 * the dispatch list, until issued to the driver; 0 when issued straight)
 * and served (issued, until completed). */
#define BLOCK_QUEUED 0
#define BLOCK_SERVED 1

/* Disks timed at most; requests to further disks are counted in
 * `missed`. Two histograms each. */
#define BLOCK_MAX_DISKS 64
/* Requests tracked between insert and completion at most; the least
 * recently touched make room (a request merged into another never
 * completes). */
#define BLOCK_MAX_INFLIGHT 8192

struct block_key {
	/* The disk as the kernel's dev_t: major << 20 | first minor. */
	__u32 dev;
	__u32 phase;
};

#endif
