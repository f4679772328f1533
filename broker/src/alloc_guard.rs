//! A global allocator that keeps a hostile request from aborting the process.
//!
//! kafka-protocol 0.18 reserves `Vec::with_capacity(n)` for an array count `n` read straight
//! off the wire before decoding any element (upstream PRs #152, #161 and #200 are open). Eight
//! bytes claiming 2^31 topics ask for ~150 GB; the system allocator refuses, and Rust aborts.
//! Here, reservations of 1 GiB and more are mapped with `MAP_NORESERVE`: address space only,
//! no memory committed, so the reservation succeeds, the decoder fails on the next element
//! (the frame is far too short), and the mapping is released. Real memory use is unchanged:
//! pages are committed only when written, so a legitimate huge buffer behaves as before.
//! Remove this once kafka-protocol bounds reservations by the bytes left in the frame.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of this size and up are mapped, not taken from the heap.
const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct GuardedAlloc;

fn huge(layout: Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
}

// SAFETY: every method either forwards to `System` with the caller's arguments, or (for huge,
// page-aligned layouts) uses mmap/munmap on whole mappings it created itself: mmap returns
// page-aligned memory (satisfying align <= PAGE) of at least `size` bytes, and dealloc/realloc
// of such a block always reach munmap with the same size, because `huge(layout)` depends only
// on the layout the caller must pass back unchanged.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !huge(layout) {
            // SAFETY: same contract as ours.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping with no address hint has no preconditions.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if huge(layout) {
            // SAFETY: `ptr` came from our mmap of exactly `layout.size()` bytes.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from System with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if huge(layout) {
            // SAFETY: fresh anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: same contract as ours.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `layout.align()` is valid and `new_size` fits.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !huge(layout) && !huge(new_layout) {
            // SAFETY: both old and new blocks belong to System.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing the threshold (or growing a mapping): allocate, copy, free.
        // SAFETY: `new_layout` is valid; on success both blocks are live and distinct, and we
        // copy no more than either holds.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservations_succeed_without_committing_memory() {
        let layout = Layout::from_size_align(200 << 30, 8).unwrap();
        // SAFETY: the layout is non-zero; the block is written within bounds and freed with
        // the same layout.
        unsafe {
            let p = GuardedAlloc.alloc(layout);
            assert!(
                !p.is_null(),
                "a 200 GiB reservation must succeed as address space"
            );
            *p = 7;
            *p.add((200 << 30) - 1) = 9;
            let q = GuardedAlloc.realloc(p, layout, 16);
            assert_eq!(*q, 7);
            GuardedAlloc.dealloc(q, Layout::from_size_align(16, 8).unwrap());
        }
    }
}
