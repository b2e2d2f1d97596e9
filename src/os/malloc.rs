//! glibc allocator tuning (mallopt, malloc_trim).

/// Bounds the arenas to 2, keeps buffers over 256 KiB in their own mappings and trims the heap
/// top past 1 MiB. Call before other threads start.
///
/// Why: glibc gives each allocating thread its own arena (up to 8 per core), which under churn
/// keeps freed memory and triples resident memory; two hold the driver's small allocations. It
/// also raises its mmap threshold after each large free (up to 32 MiB), so a full ListVolumes'
/// buffers (a few MiB each at 10,000 volumes) would next come from the heap, interleave with
/// long-lived records and stay resident; a fixed threshold returns them to the kernel.
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
