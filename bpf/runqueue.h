/* Shared by runqueue.bpf.c and src/ebpf.rs, which mirrors it: change both. */
#ifndef SOJOURN_RUNQUEUE_H
#define SOJOURN_RUNQUEUE_H

struct runqueue_histogram {
	__u64 slots[SOJOURN_SLOTS];
	__u64 sum_ns;
	__u64 missed;
};

/* Most cgroups timed at once; the least recently used makes room. */
#define SOJOURN_MAX_CGROUPS 4096

/* Which cgroup a wait is counted under (set by the loader). */
#define SOJOURN_CGROUPS_OFF 0
#define SOJOURN_CGROUPS_DEFAULT 1
#define SOJOURN_CGROUPS_CONTROLLER 2

/* Controllers a kernel may have (CGROUP_SUBSYS_COUNT is 14 today). */
#define SOJOURN_MAX_CONTROLLERS 64

#endif
