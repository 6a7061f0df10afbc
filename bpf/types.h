/* The few kernel types sojourn's programs read, declared for CO-RE: only
 * the fields named here exist to the compiler, and each access is relocated
 * at load time against the running kernel's BTF (/sys/kernel/btf/vmlinux),
 * so one object runs on every kernel whose BTF has these fields. Declared by
 * hand rather than taken from a generated vmlinux.h so that the object a
 * source builds does not depend on the kernel of the machine building it. */
#ifndef SOJOURN_TYPES_H
#define SOJOURN_TYPES_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <stdbool.h>

/* A cgroup as the kernel names it to user space: its directory's kernfs
 * node, whose id is the directory's inode number (5.5+). */
struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
	int level; /* 0 for a hierarchy's root */
} __attribute__((preserve_access_index));

struct cgroup_subsys_state {
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));

/* A task's cgroups: one per controller (indexed by the controller's id,
 * its line in /proc/cgroups), and the default (v2) hierarchy's. */
struct css_set {
	struct cgroup_subsys_state *subsys[1];
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

/* The scheduler's per-CPU run queue and its clock (ns), which the
 * scheduler updates under the queue's lock before it enqueues a woken task
 * and before it picks the next one: schedstat's run_delay is measured on
 * it. A task reaches its CPU's run queue through its fair-class entity's
 * queue (that of its cgroup with CONFIG_FAIR_GROUP_SCHED, set for every
 * task whatever its class). */
struct rq {
	__u64 clock;
} __attribute__((preserve_access_index));

struct cfs_rq {
	struct rq *rq;
} __attribute__((preserve_access_index));

struct sched_entity {
	struct cfs_rq *cfs_rq;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	struct sched_entity se;
	/* The task's state since 5.14 (TASK_RUNNING is 0). */
	unsigned int __state;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

/* Before 5.14 the state was `long state`: a second flavour of the struct,
 * which libbpf-style loaders (aya too) match by the name before `___`. */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

/* The block layer: a request's disk, named by major and first minor. */
struct gendisk {
	int major;
	int first_minor;
} __attribute__((preserve_access_index));

struct request_queue {
	struct gendisk *disk;
} __attribute__((preserve_access_index));

struct request {
	struct request_queue *q;
} __attribute__((preserve_access_index));

/* Older kernels named the disk in the request itself. */
struct request___old {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

/* A socket: its network namespace and local port (a listener's port). */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	__u16 skc_num;
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

/* From a file descriptor to its socket: task, file table, file, socket. */
struct socket {
	struct sock *sk;
} __attribute__((preserve_access_index));

struct file {
	void *private_data;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct task_struct___files {
	struct files_struct *files;
} __attribute__((preserve_access_index));

/* An io_uring request (its opcode, IORING_OP_*) and a completion entry as
 * io_uring posts it (`res`: the request's result). */
struct io_kiocb {
	__u8 opcode;
} __attribute__((preserve_access_index));

struct io_uring_cqe {
	__u64 user_data;
	__s32 res;
	__u32 flags;
} __attribute__((preserve_access_index));

#endif
