//! glibc allocator tuning (mallopt, malloc_trim).

/// glibc gives each thread that allocates its own arena (up to 8 per core); under churn they
/// keep freed memory, and resident memory triples. Two arenas hold the driver's small
/// allocations fine.
///
/// glibc also raises its mmap threshold after each large free (up to 32 MiB), so the buffers of
/// a full ListVolumes (a few MiB each with 10,000 volumes) would come from the heap next time,
/// interleave with long-lived records and stay resident. A fixed threshold keeps every large
/// buffer in its own mapping, returned to the kernel when freed.
///
/// So: bounds the arenas to 2, keeps buffers over 256 KiB in their own mappings and trims the
/// heap top past 1 MiB. Call before other threads start.
pub fn bound_arenas() {
    const M_ARENA_MAX: libc::c_int = -8;
    const M_MMAP_THRESHOLD: libc::c_int = -3;
    const M_TRIM_THRESHOLD: libc::c_int = -1;
    // SAFETY: mallopt only adjusts allocator tuning; called before other threads start.
    unsafe {
        libc::mallopt(M_ARENA_MAX, 2);
        libc::mallopt(M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(M_TRIM_THRESHOLD, 1 << 20);
    }
}

/// Returns free pages from anywhere in the heap to the kernel.
pub fn trim() {
    // SAFETY: malloc_trim only releases free memory back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
