//! HDF5's global heap collections (signature `GCOL`), where a
//! variable-length string attribute keeps its bytes (h5py writes a
//! Python `str` so: Keras 3's `weight_names`, `layer_names`).
//!
//! HDF5 1.10.8 parses a collection (`H5HG__cache_heap_deserialize`,
//! `src/H5HGcache.c`) by walking its objects, each `[index u16, refs u16,
//! reserved u32, size u64, data padded to 8 bytes]`, and checks that an
//! object fits in its collection only in an assertion, which release
//! builds leave out; `H5HG_read` then copies the size the object claims.
//! A collection whose object claims more than the collection holds makes
//! the library read past its buffer (found by `fuzz_legacy_h5`: a SIGSEGV
//! in `H5HG_read` under `H5Aread`), and a free-space object (index 0) of
//! size 0 makes the walk loop forever. [`check`] walks every collection in
//! the file the way HDF5 does, before any variable-length string is read,
//! and refuses those.

/// Bytes of a collection's header: `GCOL`, version, 3 reserved, size.
const HEADER: u64 = 16;
/// Bytes of an object's header: index, references, reserved, size.
const OBJECT_HEADER: u64 = 16;

/// Check every global heap collection in the HDF5 file `b` (8-byte
/// lengths, what h5py writes): `Err` names the first whose objects HDF5
/// would read out of bounds, or walk forever.
pub fn check(b: &[u8]) -> Result<(), String> {
    let mut from = 0;
    while let Some(at) = find(&b[from..], b"GCOL").map(|i| i + from) {
        from = at + 1;
        collection(b, at as u64)?;
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn u16_at(b: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u64::from(u16::from_le_bytes([s[0], s[1]])))
}

fn u64_at(b: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// The collection that starts at `start` (where `GCOL` is): a header HDF5
/// would not load (another version, past the end of the file) is not
/// its problem; an object past the collection's end is.
fn collection(b: &[u8], start: u64) -> Result<(), String> {
    let len = b.len() as u64;
    let version = usize::try_from(start + 4).ok().and_then(|i| b.get(i));
    let Some(size) = u64_at(b, start + 8) else {
        return Ok(());
    };
    let Some(end) = start.checked_add(size) else {
        return Ok(());
    };
    if version != Some(&1) || end > len {
        return Ok(());
    }
    let bad = |what: String| {
        Err(format!(
            "the global heap collection at byte {start} ({size} bytes) {what}: HDF5 would read past it"
        ))
    };
    let mut p = start + HEADER;
    while p < end {
        if p + OBJECT_HEADER > end {
            break; // HDF5 takes the tail as free space
        }
        let (Some(index), Some(object)) = (u16_at(b, p), u64_at(b, p + 8)) else {
            return bad("is cut short".into());
        };
        let need = if index > 0 {
            object
                .checked_add(7)
                .map(|s| s / 8 * 8)
                .and_then(|s| s.checked_add(OBJECT_HEADER))
        } else if object < OBJECT_HEADER {
            // The free space: its size includes its header; HDF5 walks on
            // by it, so 0 would loop forever.
            return bad(format!("holds a free-space object of {object} bytes"));
        } else {
            Some(object)
        };
        match need.and_then(|n| p.checked_add(n)) {
            Some(next) if next <= end => p = next,
            _ => {
                return bad(format!(
                    "holds object {index} of {object} bytes at byte {p}, past its end"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collection of `size` bytes holding `objects` (index, data), then
    /// the free space.
    fn gcol(size: u64, objects: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = b"GCOL\x01\0\0\0".to_vec();
        b.extend(size.to_le_bytes());
        for (i, data) in objects {
            b.extend(i.to_le_bytes());
            b.extend(1u16.to_le_bytes());
            b.extend([0; 4]);
            b.extend((data.len() as u64).to_le_bytes());
            b.extend(*data);
            b.resize(b.len().div_ceil(8) * 8, 0);
        }
        let free = size - b.len() as u64;
        b.extend(0u16.to_le_bytes());
        b.extend([0; 6]);
        b.extend(free.to_le_bytes());
        b.resize(size as usize, 0);
        b
    }

    #[test]
    fn a_collection_as_h5py_writes_it_passes() {
        let mut file = vec![7u8; 100];
        file.extend(gcol(4096, &[(1, b"dense/kernel"), (2, b"dense/bias")]));
        file.extend([0u8; 50]);
        assert_eq!(check(&file), Ok(()));
        // Another version, or a collection past the file: HDF5 will not load it.
        let mut v2 = gcol(4096, &[(1, b"x")]);
        v2[4] = 2;
        assert_eq!(check(&v2), Ok(()));
        assert_eq!(check(&gcol(4096, &[(1, b"x")])[..4000]), Ok(()));
    }

    #[test]
    fn an_object_past_its_collection_or_an_empty_free_space_is_refused() {
        let mut b = gcol(4096, &[(1, b"dense/kernel")]);
        // Object 1's size (at 16 + 8) claims far more than the collection.
        b[24..32].copy_from_slice(&8391736625977098280u64.to_le_bytes());
        let e = check(&b).unwrap_err();
        assert!(e.contains("object 1") && e.contains("past its end"), "{e}");
        // Just past the end by one padded block.
        let mut b = gcol(64, &[(1, &[9u8; 16])]);
        b[24..32].copy_from_slice(&40u64.to_le_bytes());
        assert!(check(&b).is_err());
        // A size that overflows when padded.
        b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check(&b).is_err());
        // A free-space object of 0 bytes.
        let mut b = gcol(4096, &[(1, b"x")]);
        let free = 16 + 16 + 8;
        b[free + 8..free + 16].copy_from_slice(&0u64.to_le_bytes());
        let e = check(&b).unwrap_err();
        assert!(e.contains("free-space object of 0 bytes"), "{e}");
    }
}
