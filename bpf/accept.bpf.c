// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/* Accept-queue sojourn time: from the moment a connection is established
 * on the server's side (its socket goes from SYN_RECV to ESTABLISHED, just
 * after it joined its listener's accept queue) to the moment accept(2) or
 * accept4(2) returns it, as a histogram per listener (network namespace
 * and port), every namespace's listeners alike — or until io_uring posts
 * the completion of an accept it made. Tracepoints only: kernels built
 * without kprobes, or whose policy refuses fentry, still have them.
 * Connections taken inside the kernel, or by io_uring into its own table
 * of files (direct descriptors), are not timed. */

#include "types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "slots.h"
#include "accept.h"

/* TCP states, as include/net/tcp_states.h numbers them (a UAPI of sorts:
 * the inet_sock_set_state tracepoint prints them by these values). */
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3

struct queued {
	__u64 at;
	struct listener_key listener;
};

/* Connections waiting, by their socket's address. One that is never
 * accepted (closed first) is forgotten when room is needed. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SOJOURN_MAX_WAITING);
	__type(key, __u64);
	__type(value, struct queued);
} waiting SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SOJOURN_MAX_LISTENERS);
	__type(key, struct listener_key);
	__type(value, struct timed_histogram);
} listeners SEC(".maps");

/* Accepted connections not counted: no room for their listener. */
SOJOURN_COUNTER(missed);

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	struct queued q = {};
	__u64 key = (__u64)sk;

	if (oldstate != TCP_SYN_RECV || newstate != TCP_ESTABLISHED)
		return 0;
	q.at = bpf_ktime_get_ns();
	/* A child has its listener's namespace and local port. */
	q.listener.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	q.listener.port = BPF_CORE_READ(sk, __sk_common.skc_num);
	bpf_map_update_elem(&waiting, &key, &q, BPF_ANY);
	return 0;
}

/* The sys_exit_accept{,4} tracepoints' record (their format file). */
struct syscall_exit {
	__u64 common;
	__s32 nr;
	__s64 ret;
};

/* The connection `fd` (a descriptor of the current task's table) was
 * taken off its listener's queue: its wait is counted, if it was stamped.
 * Anything else `fd` is (not a socket, not one waiting) finds no stamp. */
static __always_inline int accepted(long fd)
{
	struct task_struct___files *task;
	struct timed_histogram *h, zero = {};
	struct listener_key listener;
	struct fdtable *fdt;
	struct file **fds, *file = 0;
	struct socket *sock;
	struct queued *q;
	__u64 key, ns;

	if (fd < 0)
		return 0;
	task = (struct task_struct___files *)bpf_get_current_task();
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_core_read(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	key = (__u64)BPF_CORE_READ(sock, sk);
	q = bpf_map_lookup_elem(&waiting, &key);
	if (!q)
		return 0;
	ns = bpf_ktime_get_ns() - q->at;
	listener = q->listener;
	bpf_map_delete_elem(&waiting, &key);
	h = lookup_or_init(&listeners, &listener, &zero);
	if (h)
		histogram_add(h, ns);
	else
		count_one(&missed);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int accept4_exit(struct syscall_exit *ctx)
{
	return accepted(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int accept_exit(struct syscall_exit *ctx)
{
	return accepted(ctx->ret);
}

/* io_uring's accept opcode (UAPI, include/uapi/linux/io_uring.h). */
#define IORING_OP_ACCEPT 13

/* A completion io_uring posts: an accept request's own, whose result is
 * the new descriptor; or one with no request, which a multishot request
 * (an accept's among them, or a receive's) posts each time, whose result
 * is tried as a descriptor too. io_uring posts it from a thread sharing
 * the submitter's table of files (the task itself, its io-wq worker, its
 * SQPOLL thread). Kernels whose tracepoint passes no completion entry
 * (before 6.3) refuse the program: io_uring's accepts go untimed there. */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(io_uring_complete, void *ring, void *req, struct io_uring_cqe *cqe)
{
	if (req && BPF_CORE_READ((struct io_kiocb *)req, opcode) != IORING_OP_ACCEPT)
		return 0;
	return accepted(cqe->res);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
