/* The histogram slots every sojourn program counts in, mirrored by
 * src/ebpf.rs (`SLOTS`, `SLOT_OFFSET`): change both; and what the
 * programs share to count in them.
 *
 * Buckets are powers of two *seconds*, as a Prometheus native histogram of
 * schema 0 has them: slot 0 counts waits of 0 ns, slot s > 0 waits in
 * (2^(s-32), 2^(s-31)] seconds, native bucket s - 31. A wait is counted in
 * units of 2^-30 s (0.93 ns), in which those bounds are whole powers of
 * two, so the slot is the ceiling of the base-2 logarithm and no bound is
 * rounded. */
#ifndef SOJOURN_SLOTS_H
#define SOJOURN_SLOTS_H

#define SOJOURN_SLOTS 50
/* Longer waits are counted as this (2^42 ns, 73 minutes): keeps the
 * conversion to 2^-30 s units within 64 bits. */
#define SOJOURN_MAX_NS (1ULL << 42)

/* ceil(log2(x)) for x >= 1: 0 for 1, 1 for 2, 2 for 3 and 4, ... */
static __always_inline __u32 ceil_log2(__u64 x)
{
	__u32 r = 0;

	x -= 1;
	if (x >> 32) { x >>= 32; r += 32; }
	if (x >> 16) { x >>= 16; r += 16; }
	if (x >> 8) { x >>= 8; r += 8; }
	if (x >> 4) { x >>= 4; r += 4; }
	if (x >> 2) { x >>= 2; r += 2; }
	if (x >> 1) { x >>= 1; r += 1; }
	return r + (__u32)x;
}

/* The slot of a wait of `ns` nanoseconds (capped at SOJOURN_MAX_NS): 1 +
 * the least k >= 0 with ns * 2^30 / 10^9 <= 2^k, i.e. the ceiling of the
 * base-2 logarithm of the wait in 2^-30 s units. As 2^30 / 10^9 lies in
 * (1, 2), k is ceil(log2(ns)) or one more, told by one exact comparison
 * of ns against 10^9 * 2^(k-30) — no division, which the JIT makes a
 * DIV instruction of tens of cycles, on the scheduler's path. */
static __always_inline __u32 seconds_slot(__u64 ns)
{
	__u32 k, slot;
	int fits;

	if (ns == 0)
		return 0;
	if (ns > SOJOURN_MAX_NS)
		ns = SOJOURN_MAX_NS;
	k = ceil_log2(ns);
	/* ns <= 2^k <= 2^42: neither side overflows. */
	if (k <= 30)
		fits = (ns << (30 - k)) <= 1000000000ULL;
	else
		fits = ns <= (1000000000ULL << (k - 30));
	slot = k + (fits ? 1 : 2);
	if (slot >= SOJOURN_SLOTS)
		slot = SOJOURN_SLOTS - 1;
	return slot;
}

/* A histogram of waits that several CPUs add to at once (a disk's, a
 * cgroup's, a listener's), mirrored by src/ebpf.rs (`TimedHistogram`). */
struct timed_histogram {
	__u64 slots[SOJOURN_SLOTS];
	__u64 sum_ns;
};

/* Adds a wait of `ns` (capped), whose slot is `slot`, to `h`, atomically. */
static __always_inline void histogram_add_slot(struct timed_histogram *h, __u32 slot, __u64 ns)
{
	if (ns > SOJOURN_MAX_NS)
		ns = SOJOURN_MAX_NS;
	if (slot >= SOJOURN_SLOTS)
		return;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->sum_ns, ns);
}

/* Adds a wait of `ns` to `h`, atomically. */
static __always_inline void histogram_add(struct timed_histogram *h, __u64 ns)
{
	histogram_add_slot(h, seconds_slot(ns), ns);
}

/* The value at `key` in the hash `map`, made from `init` where absent;
 * NULL when the map has no room for it. */
static __always_inline void *lookup_or_init(void *map, const void *key, const void *init)
{
	void *value = bpf_map_lookup_elem(map, key);

	if (value)
		return value;
	bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* A count of what a program could not time (a one-entry array). */
#define SOJOURN_COUNTER(name)                      \
	struct {                                   \
		__uint(type, BPF_MAP_TYPE_ARRAY);  \
		__uint(max_entries, 1);            \
		__type(key, __u32);                \
		__type(value, __u64);              \
	} name SEC(".maps")

static __always_inline void count_one(void *counter)
{
	__u32 first = 0;
	__u64 *n = bpf_map_lookup_elem(counter, &first);

	if (n)
		__sync_fetch_and_add(n, 1);
}

#endif
