//! A global allocator that survives absurd allocation requests from hostile input.
//!
//! The `kafka-protocol` decoders size a `Vec` from the element count on the wire before reading
//! the elements, so a 30-byte request claiming 2^31 topics asks for ~200 GB. The system
//! allocator refuses and Rust aborts the whole broker. [`LazyHugeAlloc`] serves every allocation
//! of 1 GiB or more from an anonymous `MAP_NORESERVE` mapping instead: address space is reserved
//! but no memory is committed until touched, so the decoder fails on the missing bytes and frees
//! the mapping, and only that connection is closed. Everything smaller goes to the system
//! allocator unchanged.
//!
//! Binaries opt in with `#[global_allocator] static A: LazyHugeAlloc = LazyHugeAlloc;`
//! (`strom` does).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped lazily.
pub const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct LazyHugeAlloc;

fn is_huge(size: usize, align: usize) -> bool {
    size >= HUGE && align <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
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

// SAFETY: huge blocks are mapped and unmapped with the same size (the layout's), are page
// aligned (which satisfies any alignment up to a page) and zero-filled by the kernel; all other
// requests are forwarded to `System` with their original layouts.
unsafe impl GlobalAlloc for LazyHugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout.size(), layout.align()) {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_huge = is_huge(layout.size(), layout.align());
        let new_huge = is_huge(new_size, layout.align());
        if !old_huge && !new_huge {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if old_huge && new_huge {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map`.
            let p =
                unsafe { libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE) };
            return if p == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                p.cast()
            };
        }
        // Crossing the threshold: allocate, copy, free.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_blocks_are_lazy_and_round_trip() {
        let a = LazyHugeAlloc;
        unsafe {
            // 64 GiB: far more than the machine has; only reserved.
            let layout = Layout::from_size_align(64 << 30, 8).unwrap();
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            *p.add((64 << 30) - 1) = 9;
            let q = a.realloc(p, layout, 65 << 30);
            assert!(!q.is_null());
            assert_eq!(*q, 7);
            a.dealloc(q, Layout::from_size_align(65 << 30, 8).unwrap());
            // Small blocks still come from the system allocator, and can grow into huge ones.
            let small = Layout::from_size_align(16, 8).unwrap();
            let s = a.alloc(small);
            *s = 3;
            let big = a.realloc(s, small, HUGE);
            assert_eq!(*big, 3);
            let back = a.realloc(big, Layout::from_size_align(HUGE, 8).unwrap(), 32);
            assert_eq!(*back, 3);
            a.dealloc(back, Layout::from_size_align(32, 8).unwrap());
        }
    }
}
