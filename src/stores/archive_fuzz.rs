//! Test only: what the archive readers' fuzz tests share. The hostile inputs (arbitrary bytes,
//! and a valid archive with flipped bytes, cut short, or with one length altered), and the
//! largest single allocation made on the current thread, so that a test can check that a length
//! read from an archive is never allocated as such. Each reader runs `PROPTEST_CASES` cases
//! (256 by default; e.g. `PROPTEST_CASES=20000 cargo test --lib fuzz` for a longer run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::sample::Index;

struct Probe;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations made while the thread is being torn down are not watched.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; only sizes are noted.
unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static PROBE: Probe = Probe;

/// Runs `f` on this thread and returns its result with the largest single allocation it made.
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let outer = LARGEST.with(|largest| largest.replace(0));
    let out = f();
    let inner = LARGEST.with(|largest| largest.replace(outer));
    LARGEST.with(|largest| largest.set(largest.get().max(inner)));
    (out, inner)
}

/// Hostile variants of `base`, a valid archive: arbitrary bytes, flipped bytes, a cut, or
/// `alter(bytes, offset, value)` writing a new length at one of the `lengths` offsets.
pub fn hostile_archives(base: Vec<u8>, lengths: Vec<usize>, alter: fn(&mut [u8], usize, u64)) -> BoxedStrategy<Vec<u8>> {
    let arbitrary = proptest::collection::vec(any::<u8>(), 0..4096);
    let original = base.clone();
    let flipped = proptest::collection::vec((any::<Index>(), 1u8..=255), 1..8).prop_map(move |flips| {
        let mut bytes = original.clone();
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        bytes
    });
    let original = base.clone();
    let cut = any::<Index>().prop_map(move |cut| original[..cut.index(original.len())].to_vec());
    let altered = (any::<Index>(), prop_oneof![0u64..4096, any::<u64>()]).prop_map(move |(at, value)| {
        let mut bytes = base.clone();
        alter(&mut bytes, lengths[at.index(lengths.len())], value);
        bytes
    });
    prop_oneof![arbitrary, flipped, cut, altered].boxed()
}

#[test]
fn a_large_allocation_is_seen() {
    let (v, largest) = largest_allocation(|| vec![0u8; 3 << 20]);
    assert_eq!(v.len(), 3 << 20);
    assert!(largest >= 3 << 20, "{largest}");
    let ((), small) = largest_allocation(|| drop(vec![0u8; 10]));
    assert!(small < 1 << 20, "{small}");
}
