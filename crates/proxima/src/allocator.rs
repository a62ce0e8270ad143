//! The one place with `unsafe` code: the global allocator, four methods calling into mimalloc.
//!
//! The `mimalloc` crate's allocator asks for every block with `mi_malloc_aligned`, whose fast
//! path takes only blocks up to 1 KiB; a larger one (a request's boxed futures, buffers) went
//! through mimalloc's aligned fallback, about 200 instructions where `mi_malloc` takes 30, ten
//! times a request. Every mimalloc block is aligned to 8 bytes, so a layout that asks for no
//! more is served by the plain calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Every block mimalloc hands out starts at a multiple of this.
const PLAIN_ALIGN: usize = 8;

/// mimalloc as Rust's global allocator (`#[global_allocator]`): the binary's, and the
/// benchmark examples' so that they measure what the gateway runs.
pub struct MiMalloc;

/// A new block for `layout` from `plain` (size) when its alignment allows, else from `aligned`
/// (size, alignment).
#[inline(always)]
unsafe fn new_block(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    if layout.align() <= PLAIN_ALIGN {
        plain(layout.size()).cast()
    } else {
        aligned(layout.size(), layout.align()).cast()
    }
}

// SAFETY: each call returns a block of mimalloc's of at least `size` bytes aligned to
// `layout.align()` (the plain calls only when that is at most the 8 bytes of every block),
// or null; `mi_free` and the reallocations take any block of mimalloc's.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        new_block(layout, mi::mi_malloc, mi::mi_malloc_aligned)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        new_block(layout, mi::mi_zalloc, mi::mi_zalloc_aligned)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Blocks of every size class the gateway uses, at every alignment Rust asks for, come
    /// back aligned, keep their bytes when they grow, and go back.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes_when_they_grow() {
        let allocator = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 7, 8, 24, 40, 1000, 1100, 3000, 9000, 70_000] {
                let layout = Layout::from_size_align(size.max(align), align).unwrap();
                let size = layout.size();
                // SAFETY: a layout of non-zero size; the block is written within its size,
                // grown with its own layout, and freed once.
                unsafe {
                    let block = allocator.alloc(layout);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0, "{size} bytes at {align}");
                    for i in 0..size {
                        *block.add(i) = (i % 251) as u8;
                    }
                    let grown = allocator.realloc(block, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "{size} bytes grown at {align}");
                    for i in 0..size {
                        assert_eq!(*grown.add(i), (i % 251) as u8);
                    }
                    let grown_layout = Layout::from_size_align(size * 3, align).unwrap();
                    allocator.dealloc(grown, grown_layout);
                    let zeroed = allocator.alloc_zeroed(layout);
                    assert_eq!(zeroed as usize % align, 0);
                    assert!((0..size).all(|i| *zeroed.add(i) == 0));
                    allocator.dealloc(zeroed, layout);
                }
            }
        }
    }
}
