/* Shared by accept.bpf.c and src/ebpf.rs, which mirrors it: change both. */
#ifndef SOJOURN_ACCEPT_H
#define SOJOURN_ACCEPT_H

/* A listener: its network namespace (the namespace file's inode, as
 * /proc/PID/ns/net names it) and its local port. */
struct listener_key {
	__u32 netns;
	__u32 port;
};

/* Most listeners timed at once; more go untimed (counted in missed). */
#define SOJOURN_MAX_LISTENERS 1024
/* Most connections waiting in accept queues at once, timed; the least
 * recently queued makes room. */
#define SOJOURN_MAX_WAITING 65536

#endif
