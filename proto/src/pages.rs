//! Giving back the memory of mapped weights once they are read.
//!
//! Loading maps model and data files; every page a pass reads stays resident in the process
//! (and counts in its RSS) for as long as the map lives, which is until the model is saved.
//! A pass that reads a weight once (to quantize it, say) calls [`release_pages`] afterwards:
//! the pages leave the process, the page cache keeps them, and a later read faults them back
//! in from the file with the same contents. Reading a 4 GB model weight by weight then holds
//! one weight's pages at a time, not 4 GB.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// A read-only map of a whole file, shared by the `Bytes` slices made from it.
struct MapOwner {
    map: memmap2::Mmap,
}

/// The owner `Bytes` holds: keeps the map alive while any slice of it is.
struct SharedMap(Arc<MapOwner>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}

/// The maps made by [`map_file`], so that [`release_pages`] only ever advises memory that is
/// one of them (advising heap memory to drop its pages would zero it).
static LIVE: Mutex<Vec<Weak<MapOwner>>> = Mutex::new(Vec::new());

/// Maps `file` read-only, whole; an empty file gives an empty `Bytes`.
pub(crate) fn map_file(file: &File) -> io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only and private to Kiln. Like every mmap reader (ORT included)
    // we rely on nobody truncating the file while it is mapped; if someone does, touching the
    // lost pages raises SIGBUS.
    let map = unsafe { memmap2::Mmap::map(file)? };
    let owner = Arc::new(MapOwner { map });
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(&owner));
    drop(live);
    Ok(Bytes::from_owner(SharedMap(owner)))
}

/// Drops the pages under `data` from this process when `data` lies in a file mapped by
/// loading; returns the bytes advised (0 for memory that is not such a map, or where the
/// platform has no `madvise`).
///
/// Nothing changes for readers: the maps are private and never written, so a later read of
/// `data` faults the same bytes back in from the file (from the page cache when it still holds
/// them). Call it after the last read of a large weight that is read once.
pub fn release_pages(data: &[u8]) -> usize {
    if data.is_empty() {
        return 0;
    }
    let start = data.as_ptr() as usize;
    let end = start + data.len();
    // Held while advising: a map found here cannot be unmapped (and its addresses reused)
    // before we are done, since we also hold a strong reference to it.
    let live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let owner = live.iter().filter_map(Weak::upgrade).find(|o| {
        let base = o.map.as_ptr() as usize;
        start >= base && end <= base + o.map.len()
    });
    let Some(owner) = owner else {
        return 0;
    };
    let offset = start - owner.map.as_ptr() as usize;
    advise_dont_need(&owner.map, offset, data.len())
}

#[cfg(unix)]
fn advise_dont_need(map: &memmap2::Mmap, offset: usize, len: usize) -> usize {
    // SAFETY: MADV_DONTNEED discards changes made to a private map, and this one is read-only,
    // so it has none; the range is inside the map (checked by the caller). memmap2 aligns the
    // start down to a page, which only drops a little more of the same map.
    let advised =
        unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
    if advised.is_ok() {
        len
    } else {
        0
    }
}

#[cfg(not(unix))]
fn advise_dont_need(_map: &memmap2::Mmap, _offset: usize, _len: usize) -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Resident pages of `data` (mincore is per process mapping only on Linux, so this reads
    /// /proc/self/smaps' Rss of the map instead).
    #[cfg(target_os = "linux")]
    fn resident_kib(map_start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = map_start >= a && map_start < b;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("Rss:") {
                    return v.trim().trim_end_matches(" kB").trim().parse().unwrap();
                }
            }
        }
        panic!("map at {map_start:#x} not in /proc/self/smaps");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_leave_the_process_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        let content: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&content)
            .unwrap();
        let bytes = map_file(&File::open(&path).unwrap()).unwrap();
        let sum: u64 = bytes.iter().map(|&b| b as u64).sum();
        let base = bytes.as_ptr() as usize;
        assert!(
            resident_kib(base) >= 4096,
            "reading did not fault the pages in"
        );
        assert_eq!(release_pages(&bytes), bytes.len());
        assert!(
            resident_kib(base) < 64,
            "pages still resident after release: {} KiB",
            resident_kib(base)
        );
        // Read again: the same bytes come back from the file.
        assert_eq!(bytes.iter().map(|&b| b as u64).sum::<u64>(), sum);
        assert!(bytes[..] == content[..]);
    }

    #[test]
    fn memory_that_is_not_a_map_is_left_alone() {
        let heap = vec![7u8; 1 << 20];
        assert_eq!(release_pages(&heap), 0);
        assert!(heap.iter().all(|&b| b == 7));
        assert_eq!(release_pages(&[]), 0);
        // A map that is gone no longer counts, even if its address range is reused.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, vec![1u8; 1 << 16]).unwrap();
        let bytes = map_file(&File::open(&path).unwrap()).unwrap();
        let (ptr, len) = (bytes.as_ptr() as usize, bytes.len());
        drop(bytes);
        let live = LIVE.lock().unwrap();
        assert!(!live.iter().filter_map(Weak::upgrade).any(|o| {
            let base = o.map.as_ptr() as usize;
            ptr >= base && ptr + len <= base + o.map.len()
        }));
    }
}
