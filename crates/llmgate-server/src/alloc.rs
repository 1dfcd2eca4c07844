//! The binary's global allocator: mimalloc, entered by its plain entry
//! points whenever the layout allows.
//!
//! The `mimalloc` crate's allocator sends every request through
//! `mi_malloc_aligned`, whose fast path only serves blocks up to 1 KiB that
//! happen to sit at the right alignment already; larger blocks (read
//! buffers, boxed futures of the layer stack) take its over-allocating slow
//! path, several per request. On 64-bit targets mimalloc's blocks are 8
//! bytes, or a multiple of 16 bytes in pages that start 16-aligned, so
//! `mi_malloc(size)` is aligned to 16 for sizes over 8 and to 8 below: any
//! layout whose alignment is at most 16 and at most its size can use it.
//! Stricter alignments, and the rare layout smaller than its alignment
//! (`Layout` does not pad its size), take the aligned entry points.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment `mi_malloc` guarantees for blocks of more than 8 bytes.
const PLAIN_ALIGN: usize = 16;

/// Whether `mi_malloc(size)` (or `mi_realloc` to `size`) is aligned enough
/// for `align`: blocks of `size` are aligned to `min(PLAIN_ALIGN, size)`
/// rounded down to a power of two, at least.
#[inline]
fn plain_fits(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// mimalloc, preferring the entry points without an alignment argument.
pub struct Mimalloc;

// SAFETY: every method hands the layout's size to mimalloc and asks for the
// layout's alignment explicitly whenever mimalloc's plain entry points do
// not guarantee it for that size (`plain_fits`); blocks are freed with
// mi_free, which takes any block mimalloc returned, aligned or not.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain_fits(layout.size(), layout.align()) {
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain_fits(layout.size(), layout.align()) {
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_fits(new_size, layout.align()) {
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layouts smaller than their alignment (valid, if rare: `Layout` does
    /// not pad its size) and reallocations that shrink below it: mimalloc's
    /// smallest blocks are 8 bytes apart, so a plain entry point would hand
    /// out blocks only 8-aligned. Many blocks are held at once so that a
    /// misaligned one would show.
    #[test]
    fn blocks_smaller_than_their_alignment_are_still_aligned() {
        let a = Mimalloc;
        for align in [2usize, 4, 8, 16] {
            for size in 1..align {
                let layout = Layout::from_size_align(size, align).unwrap();
                let blocks: Vec<*mut u8> = (0..64)
                    .map(|i| unsafe {
                        if i % 2 == 0 {
                            a.alloc(layout)
                        } else {
                            a.alloc_zeroed(layout)
                        }
                    })
                    .collect();
                for &p in &blocks {
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{size}/{align}");
                }
                for p in blocks {
                    unsafe { a.dealloc(p, layout) };
                }
            }
            // Shrinking a block to less than its alignment.
            let big = Layout::from_size_align(4 * align.max(16), align).unwrap();
            let blocks: Vec<*mut u8> = (0..64)
                .map(|_| unsafe {
                    let p = a.alloc(big);
                    a.realloc(p, big, 1)
                })
                .collect();
            for p in blocks {
                assert_eq!(p as usize % align, 0, "shrunk to 1/{align}");
                unsafe { a.dealloc(p, Layout::from_size_align(1, align).unwrap()) };
            }
        }
    }

    /// Every alignment and a spread of sizes, small and past mimalloc's
    /// small-block limit: blocks come back aligned, writable, zeroed when
    /// asked, and keep their contents when grown or shrunk.
    #[test]
    fn blocks_are_aligned_zeroed_and_keep_contents_across_realloc() {
        let a = Mimalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1usize, 7, 8, 16, 24, 100, 1024, 1500, 9000, 70_000] {
                let size = size.max(align);
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "zeroed {size}/{align}");
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    // Grow, then shrink below the original size.
                    let grown = size * 3;
                    let p = a.realloc(p, layout, grown);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "grown {size}/{align}");
                    let shrunk = size.div_ceil(2).max(align);
                    let grown_layout = Layout::from_size_align(grown, align).unwrap();
                    let p = a.realloc(p, grown_layout, shrunk);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "shrunk {size}/{align}");
                    for i in 0..shrunk.min(size) {
                        assert_eq!(*p.add(i), (i % 251) as u8, "byte {i} of {size}/{align}");
                    }
                    a.dealloc(p, Layout::from_size_align(shrunk, align).unwrap());
                    let p = a.alloc(layout);
                    assert_eq!(p as usize % align, 0, "alloc {size}/{align}");
                    a.dealloc(p, layout);
                }
            }
        }
    }
}
