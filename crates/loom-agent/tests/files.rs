//! The file capability's reads have bounded memory: a huge file costs the cap, not its size. This
//! binary counts allocations (the largest single one) with its own global allocator, so it holds
//! only tests that do not mind it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loom_agent::capability::{Capability, Files};
use loom_agent::tool::ToolContext;
use serde_json::json;

/// The system allocator, remembering the largest allocation it made.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

#[tokio::test]
async fn a_one_gib_file_is_read_with_memory_bounded_by_the_cap() {
    let dir = std::env::temp_dir().join(format!("loom-files-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let size: u64 = 1 << 30;
    std::fs::File::create(dir.join("big.bin")).unwrap().set_len(size).unwrap(); // sparse
    let cap = 64 * 1024;
    let tools = Files::read_only(&dir).max_read_bytes(cap).tools();
    let read = &tools[0];
    assert_eq!(read.name(), "read_file");

    LARGEST.store(0, Ordering::SeqCst);
    let call = read.call(ToolContext::detached("run_1", "sess_1"), json!({"path": "big.bin"}));
    let out = tokio::time::timeout(Duration::from_secs(30), call).await.expect("the read answers").unwrap();
    let largest = LARGEST.load(Ordering::SeqCst);

    let (shown, note) = out.content.split_once("\n[file truncated").expect("the result says it was truncated");
    assert!(shown.len() <= cap, "{} bytes shown", shown.len());
    assert_eq!(shown.len(), cap, "a file of zeros is valid UTF-8: the whole cap is shown");
    assert_eq!(note, format!(": {cap} of {size} bytes shown]"));
    assert!(largest < 4 * cap, "the largest allocation during the read was {largest} bytes (cap {cap})");

    // A file of exactly the cap is whole: not truncated.
    std::fs::write(dir.join("exact.txt"), "x".repeat(cap)).unwrap();
    let out = read.call(ToolContext::detached("run_1", "sess_1"), json!({"path": "exact.txt"})).await.unwrap();
    assert_eq!(out.content, "x".repeat(cap));
    std::fs::remove_dir_all(&dir).ok();
}
