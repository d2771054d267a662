use super::*;
use crate::runtime::testing::TestGuest;
use crate::runtime::wasi::calls::random::{RANDOM_CHUNK_BYTES, random_get};

#[test]
fn random_get_fills_exactly_the_range_chunk_by_chunk() {
    let mut test = TestGuest::with_pages(8);
    let (buf, len) = (100, 3 * RANDOM_CHUNK_BYTES + 7);
    assert_eq!(random_get(test.env(), buf as i32, len as i32).unwrap(), OK);
    assert_eq!(test.read(buf - 1, 1), [0]);
    assert_eq!(test.read(buf + len, 1), [0]);
    let filled = test.read(buf, len);
    let chunks: Vec<&[u8]> = filled.chunks(RANDOM_CHUNK_BYTES as usize).collect();
    // Every chunk (the last short one too) is random, and no two are alike.
    for chunk in &chunks {
        assert!(chunk.iter().filter(|byte| **byte == 0).count() < chunk.len() / 2 + 1);
    }
    for (index, chunk) in chunks.iter().enumerate().skip(1) {
        assert_ne!(chunk[..7], chunks[index - 1][..7]);
    }
}

#[test]
fn a_huge_length_is_efault_again_and_again_and_writes_nothing() {
    // The review's guest: random_get(16, 0xFFFFFF00), six times.
    let mut test = TestGuest::with_pages(1);
    for _ in 0..6 {
        assert_eq!(random_get(test.env(), 16, 0xFFFF_FF00_u32 as i32).unwrap(), EFAULT);
    }
    assert_eq!(test.read(0, test.size()), vec![0; test.size() as usize]);
}

#[test]
fn a_range_past_the_end_or_wrapping_past_4_gib_is_efault_and_writes_nothing() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    for (buf, len) in [
        (end - 8, 16),
        (end, 1),
        (0xFFFF_FFF0, 0x20),
        (u32::MAX, u32::MAX),
        (0, end + 1),
    ] {
        assert_eq!(
            random_get(test.env(), buf as i32, len as i32).unwrap(),
            EFAULT,
            "{buf:#x}+{len:#x}"
        );
    }
    assert_eq!(test.read(0, end), vec![0; end as usize]);
}

#[test]
fn an_empty_range_at_the_end_of_memory_succeeds() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    assert_eq!(random_get(test.env(), end as i32, 0).unwrap(), OK);
}
