//! Giving freed heap back to the kernel after many connections parked.
//!
//! glibc's `free` returns memory to the kernel only from the top of the
//! heap; the buffers of a thousand connections parked at once leave holes
//! between the small allocations that live on (each connection's task and
//! socket registration), and the RSS stays as high as the burst made it.
//! `malloc_trim` releases the whole free pages inside those holes.

/// Releases the free pages of every malloc arena (glibc); nothing
/// elsewhere (musl's allocator returns them itself).
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim takes no pointers and is thread-safe (it
        // locks each arena in turn); 0 keeps no padding at the heap's top.
        unsafe {
            malloc_trim(0);
        }
        tracing::debug!(took = ?started.elapsed(), "freed heap given back to the kernel");
    }
}
