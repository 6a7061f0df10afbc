// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/* The floor of scripts/bench_ebpf_overhead.sh: programs that do nothing on
 * the run-queue program's tracepoints, so that what attaching any program
 * there costs is told from what sojourn's work costs. */

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tp_btf/sched_wakeup")
int sched_wakeup(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int sched_wakeup_new(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_switch")
int sched_switch(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
