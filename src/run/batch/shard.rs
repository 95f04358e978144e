//! `--shard K/N`: the partition of a batch over N independent processes.
//!
//! An archive belongs to shard `1 + h mod N`, where `h` is the first 8
//! bytes (big-endian) of the SHA-256 of its path relative to its root (the
//! path it gets under OUTDIR). That is a pure function of the relative
//! path, so N processes on N machines, started in any order and each
//! walking the same tree, cover every archive exactly once, whatever else
//! the trees hold; and an archive keeps its shard when others are added.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Shard `index` (1-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// K, from 1 to `count`.
    pub index: u64,
    /// N, at least 1.
    pub count: u64,
}

impl Shard {
    /// Parse `K/N` with 1 <= K <= N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}` is not K/N with 1 <= K <= N (for example 1/4)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Does the archive at `relative` (its path under OUTDIR) belong here?
    pub fn owns(&self, relative: &Path) -> bool {
        shard_of(relative, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (1-based) of `relative` among `count`.
pub fn shard_of(relative: &Path, count: u64) -> u64 {
    let digest = Sha256::digest(relative.as_os_str().as_bytes());
    let mut h = [0u8; 8];
    h.copy_from_slice(&digest[..8]);
    1 + u64::from_be_bytes(h) % count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn parses_k_of_n() {
        assert_eq!(Shard::parse("1/1"), Ok(Shard { index: 1, count: 1 }));
        assert_eq!(Shard::parse("3/8"), Ok(Shard { index: 3, count: 8 }));
        for bad in ["0/4", "5/4", "1/0", "4", "a/b", "", "/", "1/-2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Shard { index: 2, count: 5 }.to_string(), "2/5");
    }

    #[test]
    fn the_shards_of_a_tree_are_disjoint_and_cover_it() {
        // Trees from a small deterministic generator, several N each.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        for tree in 0..20 {
            let n_paths = 1 + (next() % 300) as usize;
            let paths: Vec<PathBuf> = (0..n_paths)
                .map(|i| {
                    PathBuf::from(format!(
                        "t{tree}/d{}/e{}/m{i}.keras",
                        next() % 7,
                        next() % 3
                    ))
                })
                .collect();
            for count in [1, 2, 3, 7, 16, 1000] {
                let mut owners = vec![0u32; paths.len()];
                for index in 1..=count {
                    let s = Shard { index, count };
                    for (i, p) in paths.iter().enumerate() {
                        if s.owns(p) {
                            owners[i] += 1;
                        }
                    }
                }
                assert!(owners.iter().all(|&o| o == 1), "tree {tree}, N={count}");
            }
        }
    }

    #[test]
    fn the_partition_is_a_pure_function_of_the_relative_path() {
        // Fixed values: a change of the function would move archives
        // between shards of a run in progress.
        let p = Path::new("exp1/run2/two.keras");
        assert_eq!(shard_of(p, 1), 1);
        let got: Vec<u64> = (2..=6).map(|n| shard_of(p, n)).collect();
        // The same as Python's 1 + int.from_bytes(sha256(p)[:8], "big") % n
        // (docs/scale.md), so a script can tell where an archive went.
        assert_eq!(got, vec![1, 2, 3, 3, 5]);
        assert_eq!(shard_of(Path::new("models/m.keras"), 1000), 190);
    }
}
