//! A bounded reader of the HDF5 structures h5py writes for Keras: a
//! version-0 superblock, groups kept in symbol tables (a version-1 B-tree
//! of symbol-table nodes and a local heap of names), and version-1 object
//! headers holding the messages of contiguous or compact datasets.
//!
//! It answers one question without HDF5: would the structure walk
//! ([`super::Weights::check_structure`]) pass this file? [`scan`] says
//! yes ([`Ok`]) only for files made of exactly those structures, each field
//! in the forms HDF5 accepts when it opens and lists the objects; for
//! anything else it gives up ([`Fallback`], with the reason) and the caller
//! walks the file with HDF5 as before. So it may refuse more than HDF5,
//! never less: what it accepts, HDF5 opens, and the walk finds the same
//! objects under the same paths, within the same limits (the tests compare
//! both on every fixture and on mutated files).
//!
//! Everything is read from one byte slice through bounds-checked readers;
//! every address must lie below the end-of-file address the superblock
//! declares, which must lie within the slice. Each object header (and
//! continuation chunk), B-tree node, symbol-table node and heap claims its
//! bytes: two that overlap give up, so each byte is read as a structure
//! once and the work is bounded by the file's size.

use std::collections::BTreeMap;

use super::{Elem, MAX_ATTRIBUTES, MAX_DATASET_BYTES, MAX_DEPTH, MAX_GROUP_LINKS, MAX_OBJECTS};

/// Why [`scan`] gave up: a structure outside what it reads, or a field it
/// does not accept. Not an error of the file: HDF5 decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback(pub String);

type R<T> = std::result::Result<T, Fallback>;

fn give_up<T>(why: impl Into<String>) -> R<T> {
    Err(Fallback(why.into()))
}

/// What [`scan`] reached below the root group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Group,
    Dataset {
        elem: Elem,
        /// `[]` for a scalar.
        shape: Vec<u64>,
    },
}

/// HDF5's undefined address.
const UNDEF: u64 = u64::MAX;
/// HDF5's end of a local heap's free list (`H5HL_FREE_NULL`).
const FREE_NULL: u64 = 1;
const SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";
/// Object header continuation chunks per header.
const MAX_CHUNKS: usize = 64;
/// B-tree levels below a group's root node.
const MAX_LEVEL: u8 = 16;
/// Largest rank HDF5 knows (`H5S_MAX_RANK`).
const MAX_RANK: usize = 32;
/// Longest link name read (Keras's are a few dozen bytes): bounds the work
/// of reading the names and keys a heap holds.
const MAX_NAME: usize = 1024;

/// A bounds-checked little-endian reader over a slice.
struct Cur<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a [u8]) -> Self {
        Cur { s, i: 0 }
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        match self.i.checked_add(n) {
            Some(end) if end <= self.s.len() => {
                let r = &self.s[self.i..end];
                self.i = end;
                Ok(r)
            }
            _ => give_up("a message shorter than its fields"),
        }
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> R<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// A symbol-table entry (the root's in the superblock, a link's in a
/// symbol-table node).
struct Entry {
    name: u64,
    addr: u64,
    cache: u32,
    btree: u64,
    heap: u64,
}

fn entry(c: &mut Cur) -> R<Entry> {
    let name = c.u64()?;
    let addr = c.u64()?;
    let cache = c.u32()?;
    c.u32()?;
    let btree = c.u64()?;
    let heap = c.u64()?;
    Ok(Entry {
        name,
        addr,
        cache,
        btree,
        heap,
    })
}

/// A group's symbol table and attribute count, from its object header.
struct Group {
    btree: u64,
    heap: u64,
    attrs: usize,
}

enum Object {
    Group(Group),
    Dataset(Kind),
}

struct Reader<'a> {
    b: &'a [u8],
    /// The end-of-file address: every structure lies below it.
    eoa: u64,
    leaf_k: usize,
    internal_k: usize,
    /// The byte range of every structure read (the superblock's too), by
    /// start: HDF5 gives each its own block, so two that overlap are a
    /// corrupt file (and would let one run of bytes be read again and
    /// again). Claimed once, each byte is read once.
    used: BTreeMap<u64, u64>,
}

impl<'a> Reader<'a> {
    fn bytes(&self, at: u64, len: u64) -> R<&'a [u8]> {
        match at.checked_add(len) {
            Some(end) if end <= self.eoa => Ok(&self.b[at as usize..end as usize]),
            _ => give_up(format!(
                "{len} bytes at {at:#x} end past the end of the file ({:#x})",
                self.eoa
            )),
        }
    }

    /// Claim the `len` bytes at `at` (already checked to lie in the file)
    /// for one structure: none other may overlap them.
    fn claim(&mut self, at: u64, len: u64, what: &str) -> R<()> {
        let end = at + len;
        let before = self
            .used
            .range(..=at)
            .next_back()
            .is_some_and(|(_, &e)| e > at);
        let after = self.used.range(at..).next().is_some_and(|(&s, _)| s < end);
        if len == 0 || before || after {
            return give_up(format!("{what} at {at:#x} overlaps another structure"));
        }
        self.used.insert(at, end);
        Ok(())
    }

    /// Every message of the version-1 object header at `addr`, as (type,
    /// body); continuation chunks followed.
    fn messages(&mut self, addr: u64) -> R<Vec<(u16, &'a [u8])>> {
        let prefix = self.bytes(addr, 16)?;
        if prefix[0] != 1 {
            return give_up(format!("object header version {} at {addr:#x}", prefix[0]));
        }
        let count = u16::from_le_bytes([prefix[2], prefix[3]]) as usize;
        let size = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as u64;
        if count == 0 {
            return give_up(format!("an object header with no messages at {addr:#x}"));
        }
        // (start, length) of each chunk; the prefix is claimed with the
        // first.
        self.bytes(addr, 16 + size)?;
        self.claim(addr, 16 + size, "an object header")?;
        let mut chunks = vec![(addr + 16, size)];
        let mut out = Vec::with_capacity(count);
        let mut k = 0;
        while k < chunks.len() {
            let (at, len) = chunks[k];
            let s = self.bytes(at, len)?;
            if k > 0 {
                self.claim(at, len, "an object header continuation")?;
            }
            k += 1;
            let mut i = 0usize;
            while i < s.len() {
                if s.len() - i < 8 {
                    return give_up(format!(
                        "a cut message header in the object header at {addr:#x}"
                    ));
                }
                let ty = u16::from_le_bytes([s[i], s[i + 1]]);
                let size = u16::from_le_bytes([s[i + 2], s[i + 3]]) as usize;
                let flags = s[i + 4];
                let end = i + 8 + size;
                if size % 8 != 0 || end > s.len() {
                    return give_up(format!(
                        "a misaligned or cut message in the object header at {addr:#x}"
                    ));
                }
                // Only "constant" and "don't share": a shared message lives
                // elsewhere, and the other bits ask for cases read here never.
                if flags & !0b101 != 0 {
                    return give_up(format!(
                        "message flags {flags:#x} in the object header at {addr:#x}"
                    ));
                }
                let body = &s[i + 8..end];
                if ty == 0x10 {
                    let mut c = Cur::new(body);
                    let (at, len) = (c.u64()?, c.u64()?);
                    if len == 0 || chunks.len() >= MAX_CHUNKS {
                        return give_up(format!(
                            "continuation chunks of the object header at {addr:#x}"
                        ));
                    }
                    chunks.push((at, len));
                }
                out.push((ty, body));
                if out.len() > count {
                    return give_up(format!(
                        "more messages than the object header at {addr:#x} counts"
                    ));
                }
                i = end;
            }
        }
        if out.len() != count {
            return give_up(format!(
                "fewer messages than the object header at {addr:#x} counts"
            ));
        }
        Ok(out)
    }

    /// The group or dataset whose object header is at `addr`.
    fn object(&mut self, addr: u64) -> R<Object> {
        let mut stab = None;
        let mut attrs = 0usize;
        let (mut space, mut dtype, mut fill, mut layout) = (None, None, None, None);
        for (ty, body) in self.messages(addr)? {
            let slot = match ty {
                0x0000 | 0x0010 => continue,
                0x000c => {
                    attrs += 1;
                    continue;
                }
                0x0012 => {
                    // Modification time (decoded when the walk asks a
                    // group's info): version 1, three reserved bytes, u32.
                    if body.len() < 8 || body[0] != 1 {
                        return give_up(format!("a modification time message at {addr:#x}"));
                    }
                    continue;
                }
                0x0001 => &mut space,
                0x0003 => &mut dtype,
                0x0005 => &mut fill,
                0x0008 => &mut layout,
                0x0011 => &mut stab,
                other => {
                    return give_up(format!("message type {other:#06x} at {addr:#x}"));
                }
            };
            if slot.replace(body).is_some() {
                return give_up(format!("message type {ty:#06x} twice at {addr:#x}"));
            }
        }
        match (stab, space, dtype, layout) {
            (Some(stab), None, None, None) if fill.is_none() => {
                let mut c = Cur::new(stab);
                let (btree, heap) = (c.u64()?, c.u64()?);
                Ok(Object::Group(Group { btree, heap, attrs }))
            }
            (None, Some(space), Some(dtype), Some(layout)) => {
                let shape = dataspace(space)?;
                let (elem, size) = datatype(dtype)?;
                if let Some(fill) = fill {
                    fill_value(fill, size)?;
                }
                let declared = shape
                    .iter()
                    .try_fold(size, |acc, &d| acc.checked_mul(d))
                    .ok_or_else(|| Fallback(format!("a size that overflows at {addr:#x}")))?;
                self.layout(layout, declared, addr)?;
                Ok(Object::Dataset(Kind::Dataset { elem, shape }))
            }
            _ => give_up(format!(
                "an object neither a symbol-table group nor a dataset at {addr:#x}"
            )),
        }
    }

    /// A version-3 layout message: compact or contiguous, holding exactly
    /// the declared bytes, stored below the end of the file.
    fn layout(&self, body: &[u8], declared: u64, addr: u64) -> R<()> {
        let mut c = Cur::new(body);
        if c.u8()? != 3 {
            return give_up(format!(
                "a layout message version other than 3 at {addr:#x}"
            ));
        }
        match c.u8()? {
            0 => {
                let size = c.u16()? as u64;
                c.take(size as usize)?;
                if size != declared {
                    return give_up(format!(
                        "compact data of another size than declared at {addr:#x}"
                    ));
                }
            }
            1 => {
                let (at, size) = (c.u64()?, c.u64()?);
                if size != declared {
                    return give_up(format!(
                        "contiguous data of another size than declared at {addr:#x}"
                    ));
                }
                if at == UNDEF {
                    // Never written: the walk asks the stored size of a
                    // large dataset and would refuse.
                    if declared > MAX_DATASET_BYTES {
                        return give_up(format!("a large dataset with no storage at {addr:#x}"));
                    }
                } else if size == 0 {
                    // HDF5 2.x refuses an allocated empty contiguous
                    // dataset ("invalid dataset size").
                    return give_up(format!(
                        "an empty contiguous dataset with storage at {addr:#x}"
                    ));
                } else {
                    self.bytes(at, size)?;
                }
            }
            other => {
                return give_up(format!("layout class {other} at {addr:#x}"));
            }
        }
        Ok(())
    }

    /// The data segment of the local heap at `addr`, after checking its
    /// free list as HDF5 does when it loads the heap (and more: the list
    /// must run forward, so it ends).
    fn heap(&mut self, addr: u64) -> R<&'a [u8]> {
        let p = self.bytes(addr, 32)?;
        let mut c = Cur::new(p);
        if c.take(4)? != b"HEAP" || c.u8()? != 0 {
            return give_up(format!("no local heap version 0 at {addr:#x}"));
        }
        c.take(3)?;
        let (size, mut free, data) = (c.u64()?, c.u64()?, c.u64()?);
        if size == 0 {
            return give_up(format!("an empty local heap at {addr:#x}"));
        }
        let seg = self.bytes(data, size)?;
        if data == addr + 32 {
            self.claim(addr, 32 + size, "a local heap")?;
        } else {
            self.claim(addr, 32, "a local heap")?;
            self.claim(data, size, "a local heap's data")?;
        }
        let mut floor = 0u64;
        while free != FREE_NULL {
            let fits = free >= floor && free.checked_add(16).is_some_and(|e| e <= size);
            if !fits {
                return give_up(format!("the free list of the local heap at {addr:#x}"));
            }
            let mut c = Cur::new(&seg[free as usize..]);
            let (next, len) = (c.u64()?, c.u64()?);
            if next == 0 || len < 16 || free.checked_add(len).is_none_or(|e| e > size) {
                return give_up(format!("the free list of the local heap at {addr:#x}"));
            }
            floor = free + len;
            free = next;
        }
        Ok(seg)
    }

    /// The links of a group, in name order, from the B-tree at `root`
    /// naming them in `heap`; at most `limit`. Each name must be found by
    /// HDF5's lookup (the B-tree keys and the order of each node bound it
    /// as HDF5's binary searches expect).
    fn links(&mut self, root: u64, heap: &'a [u8], limit: usize) -> R<Vec<(&'a str, Entry)>> {
        let mut out = Vec::new();
        self.node(root, None, heap, limit, &mut out)?;
        Ok(out)
    }

    fn node(
        &mut self,
        addr: u64,
        level: Option<u8>,
        heap: &'a [u8],
        limit: usize,
        out: &mut Vec<(&'a str, Entry)>,
    ) -> R<()> {
        let two_k = 2 * self.internal_k;
        let size = 24 + 16 * two_k as u64 + 8;
        let s = self.bytes(addr, size)?;
        self.claim(addr, size, "a B-tree node")?;
        let mut c = Cur::new(s);
        if c.take(4)? != b"TREE" || c.u8()? != 0 {
            return give_up(format!("no group B-tree node at {addr:#x}"));
        }
        let lvl = c.u8()?;
        let n = c.u16()? as usize;
        c.take(16)?;
        if n > two_k || lvl > MAX_LEVEL || level.is_some_and(|l| l != lvl) {
            return give_up(format!("the B-tree node at {addr:#x}"));
        }
        if n == 0 {
            // Only an empty group's root is empty.
            return if level.is_none() && lvl == 0 {
                Ok(())
            } else {
                give_up(format!("an empty B-tree node at {addr:#x}"))
            };
        }
        let mut keys = Vec::with_capacity(n + 1);
        let mut children = Vec::with_capacity(n);
        for i in 0..=n {
            keys.push(name(heap, c.u64()?)?);
            if i < n {
                children.push(c.u64()?);
            }
        }
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return give_up(format!("B-tree keys out of order at {addr:#x}"));
        }
        for (i, &child) in children.iter().enumerate() {
            let first = out.len();
            if lvl > 0 {
                self.node(child, Some(lvl - 1), heap, limit, out)?;
            } else {
                self.symbols(child, heap, limit, out)?;
            }
            // HDF5 finds a name in child i when key i < name <= key i+1.
            if out[first..]
                .iter()
                .any(|(nm, _)| *nm <= keys[i] || *nm > keys[i + 1])
            {
                return give_up(format!("a name outside its B-tree keys at {addr:#x}"));
            }
        }
        Ok(())
    }

    /// The entries of the symbol-table node at `addr`, which must be in
    /// strictly increasing name order (HDF5 finds them by binary search).
    fn symbols(
        &mut self,
        addr: u64,
        heap: &'a [u8],
        limit: usize,
        out: &mut Vec<(&'a str, Entry)>,
    ) -> R<()> {
        let size = 8 + 80 * self.leaf_k as u64;
        let s = self.bytes(addr, size)?;
        self.claim(addr, size, "a symbol-table node")?;
        let mut c = Cur::new(s);
        if c.take(4)? != b"SNOD" || c.u8()? != 1 {
            return give_up(format!("no symbol-table node version 1 at {addr:#x}"));
        }
        c.u8()?;
        let n = c.u16()? as usize;
        if n == 0 || n > 2 * self.leaf_k {
            return give_up(format!("{n} symbols in the node at {addr:#x}"));
        }
        let first = out.len();
        for _ in 0..n {
            let e = entry(&mut c)?;
            let nm = name(heap, e.name)?;
            if nm.is_empty() || nm == "." || nm.contains('/') {
                return give_up(format!("the link name `{nm}` at {addr:#x}"));
            }
            if out.len() > first && out[out.len() - 1].0 >= nm {
                return give_up(format!("names out of order in the node at {addr:#x}"));
            }
            if out.len() >= limit {
                return give_up("more links than the walk's limits");
            }
            out.push((nm, e));
        }
        Ok(())
    }
}

/// The NUL-terminated UTF-8 name at `off` of a heap's data segment.
fn name(heap: &[u8], off: u64) -> R<&str> {
    let rest = usize::try_from(off)
        .ok()
        .and_then(|o| heap.get(o..))
        .ok_or_else(|| Fallback(format!("a name at heap offset {off}, past the heap")))?;
    let end = rest[..rest.len().min(MAX_NAME + 1)]
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| Fallback(format!("an unterminated or long name at heap offset {off}")))?;
    std::str::from_utf8(&rest[..end])
        .map_err(|_| Fallback(format!("a name at heap offset {off} is not UTF-8")))
}

/// A dataspace message (version 1 or 2): the shape of a scalar or simple
/// dataspace whose maximum dimensions, if given, are its dimensions or
/// unlimited. A null dataspace gives up.
fn dataspace(body: &[u8]) -> R<Vec<u64>> {
    let mut c = Cur::new(body);
    let version = c.u8()?;
    let rank = c.u8()? as usize;
    let flags = c.u8()?;
    if rank > MAX_RANK || flags & !1 != 0 {
        return give_up("a dataspace's rank or flags");
    }
    match version {
        1 => {
            c.take(5)?;
        }
        2 => match c.u8()? {
            0 if rank == 0 => {}
            1 if rank > 0 => {}
            _ => return give_up("a null or inconsistent dataspace"),
        },
        _ => return give_up(format!("dataspace message version {version}")),
    }
    let mut dims = Vec::with_capacity(rank);
    for _ in 0..rank {
        dims.push(c.u64()?);
    }
    if flags & 1 != 0 {
        for &d in &dims {
            let m = c.u64()?;
            if m != d && m != UNDEF {
                return give_up("a dataspace's maximum dimensions");
            }
        }
    }
    Ok(dims)
}

/// A datatype message for a little-endian IEEE float (2, 4 or 8 bytes) or
/// a little-endian integer (1, 2, 4 or 8 bytes): its element kind and size.
fn datatype(body: &[u8]) -> R<(Elem, u64)> {
    let mut c = Cur::new(body);
    let head = c.u8()?;
    let bits = c.take(3)?;
    let size = c.u32()? as u64;
    if head >> 4 != 1 {
        return give_up("a datatype message version other than 1");
    }
    match head & 0x0f {
        0 => {
            let (offset, precision) = (c.u16()?, c.u16()?);
            // Byte order little-endian, no padding; bit 3 is the sign.
            let plain = bits[0] & !0x08 == 0 && bits[1] == 0 && bits[2] == 0;
            if !matches!(size, 1 | 2 | 4 | 8)
                || offset != 0
                || precision as u64 != 8 * size
                || !plain
            {
                return give_up("an integer datatype other than a plain little-endian one");
            }
            Ok((Elem::Int(size as usize), size))
        }
        1 => {
            let fields = (
                c.u16()?,
                c.u16()?,
                c.u8()?,
                c.u8()?,
                c.u8()?,
                c.u8()?,
                c.u32()?,
            );
            // (offset, precision, exponent at, exponent bits, mantissa at,
            // mantissa bits, bias) of IEEE half, single and double.
            let ieee = match size {
                2 => (0, 16, 10, 5, 0, 10, 15),
                4 => (0, 32, 23, 8, 0, 23, 127),
                8 => (0, 64, 52, 11, 0, 52, 1023),
                _ => return give_up("a float datatype of another size than 2, 4 or 8"),
            };
            // Little-endian, no padding, implied leading mantissa bit; the
            // sign in the top bit.
            let plain = bits[0] == 0x20 && bits[1] as u64 == 8 * size - 1 && bits[2] == 0;
            if fields != ieee || !plain {
                return give_up("a float datatype other than little-endian IEEE");
            }
            Ok((Elem::Float(size as usize), size))
        }
        class => give_up(format!("datatype class {class}")),
    }
}

/// A fill value message version 2 (what HDF5 writes by default): known
/// allocation and fill times, and a fill value of the element's size (or
/// the default one) if one is defined.
fn fill_value(body: &[u8], elem_size: u64) -> R<()> {
    let mut c = Cur::new(body);
    if c.u8()? != 2 {
        return give_up("a fill value message version other than 2");
    }
    let (alloc, when, defined) = (c.u8()?, c.u8()?, c.u8()?);
    if !(1..=3).contains(&alloc) || when > 2 || defined > 1 {
        return give_up("a fill value message's times");
    }
    if defined == 1 {
        // 0: the default fill value (h5py's datasets say so).
        let size = c.u32()? as u64;
        if size != 0 && size != elem_size {
            return give_up("a fill value of another size than the element");
        }
        c.take(size as usize)?;
    }
    Ok(())
}

/// Walk the HDF5 file `b` as [`super::Weights::check_structure`] does,
/// calling `visit(path, kind)` for every group and dataset below the root
/// (depth first, each group's links in name order). `Ok` only if the walk
/// would pass; [`Fallback`] for anything this reader does not read.
pub fn scan(b: &[u8], visit: &mut dyn FnMut(&str, &Kind)) -> R<()> {
    let mut c = Cur::new(b);
    if c.take(8)? != SIGNATURE {
        return give_up("no HDF5 signature at the start (a user block?)");
    }
    let v = c.take(8)?;
    // Superblock 0, free space 0, root entry 0, shared headers 0; offsets
    // and lengths of 8 bytes.
    if v[0] != 0 || v[1] != 0 || v[2] != 0 || v[4] != 0 || v[5] != 8 || v[6] != 8 {
        return give_up("a superblock other than version 0 with 8-byte offsets");
    }
    let leaf_k = c.u16()? as usize;
    let internal_k = c.u16()? as usize;
    let flags = c.u32()?;
    let (base, free, eoa, driver) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?);
    if leaf_k == 0 || internal_k == 0 || flags != 0 || base != 0 || free != UNDEF || driver != UNDEF
    {
        return give_up("superblock fields (K values, flags, base, free space, driver)");
    }
    if eoa > b.len() as u64 {
        return give_up("a file shorter than its end-of-file address");
    }
    let root = entry(&mut c)?;
    let mut r = Reader {
        b,
        eoa,
        leaf_k,
        internal_k,
        used: BTreeMap::from([(0, 96)]),
    };
    let Object::Group(group) = r.object(root.addr)? else {
        return give_up("a root that is not a symbol-table group");
    };
    match root.cache {
        0 => {}
        1 if (root.btree, root.heap) == (group.btree, group.heap) => {}
        _ => return give_up("the root entry's cached symbol table"),
    }
    let mut count = 0usize;
    let mut stack = vec![(group, String::new(), 0usize)];
    while let Some((g, path, depth)) = stack.pop() {
        if depth > MAX_DEPTH || g.attrs > MAX_ATTRIBUTES {
            return give_up("past the walk's depth or attribute limits");
        }
        let heap = r.heap(g.heap)?;
        let limit = (MAX_GROUP_LINKS as usize - 1).min(MAX_OBJECTS - 1 - count);
        let links = r.links(g.btree, heap, limit)?;
        count += links.len();
        for (nm, e) in links {
            let child = if path.is_empty() {
                nm.to_string()
            } else {
                format!("{path}/{nm}")
            };
            if e.cache > 1 {
                return give_up(format!("`{child}` is a soft link or an unknown entry"));
            }
            match r.object(e.addr)? {
                Object::Group(sub) => {
                    if e.cache == 1 && (e.btree, e.heap) != (sub.btree, sub.heap) {
                        return give_up(format!("`{child}`'s cached symbol table"));
                    }
                    visit(&child, &Kind::Group);
                    stack.push((sub, child, depth + 1));
                }
                Object::Dataset(kind) => {
                    if e.cache != 0 {
                        return give_up(format!("`{child}`: a dataset with a cached symbol table"));
                    }
                    visit(&child, &kind);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{elem_of, Object as Reached, Weights};
    use std::io::{Read, Write};

    /// `model.weights.h5` of every committed zip fixture.
    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fixtures");
        let mut out = Vec::new();
        let mut dirs: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        for dir in dirs {
            let mut cases: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            cases.sort();
            for case in cases {
                let archive = case.join("model.keras");
                if !archive.is_file() {
                    continue;
                }
                let mut z = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
                let mut bytes = Vec::new();
                z.by_name("model.weights.h5")
                    .unwrap()
                    .read_to_end(&mut bytes)
                    .unwrap();
                let name = archive.strip_prefix(&root).unwrap().display().to_string();
                out.push((name, bytes));
            }
        }
        out
    }

    type Seen = Vec<(String, Kind)>;

    fn fast(b: &[u8]) -> (R<()>, Seen) {
        let mut seen = Vec::new();
        let verdict = scan(b, &mut |p, k| seen.push((p.to_string(), k.clone())));
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        (verdict, seen)
    }

    /// HDF5's walk of `b`: its verdict and, when it passes, what it reached.
    fn hdf5(b: &[u8]) -> (crate::error::Result<()>, Seen) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b).unwrap();
        let w = match Weights::open_at(&f, 0, b.len() as u64, "test", false) {
            Ok(w) => w,
            Err(e) => return (Err(e), Vec::new()),
        };
        if let Err(e) = w.check_structure() {
            return (Err(e), Vec::new());
        }
        let mut seen = Vec::new();
        w.walk("", |object, _, path| {
            match object {
                Reached::Group(_) => seen.push((path.to_string(), Kind::Group)),
                Reached::Dataset(ds) => seen.push((
                    path.to_string(),
                    Kind::Dataset {
                        elem: elem_of(ds),
                        shape: ds.shape().into_iter().map(|d| d as u64).collect(),
                    },
                )),
                Reached::Other => {
                    panic!("`{path}`: HDF5 reached a named datatype in a file the reader accepted")
                }
            }
            Ok(())
        })
        .unwrap();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        (Ok(()), seen)
    }

    #[test]
    fn reads_the_fixtures_as_hdf5_does() {
        let all = fixtures();
        assert!(all.len() > 50, "{} fixtures", all.len());
        let mut read = 0;
        let mut fell_back = Vec::new();
        for (name, b) in &all {
            let (verdict, seen) = fast(b);
            match verdict {
                Ok(()) => {
                    let (h, hseen) = hdf5(b);
                    assert!(h.is_ok(), "{name}: read, but HDF5's walk refuses: {h:?}");
                    assert_eq!(seen, hseen, "{name}");
                    assert!(!seen.is_empty(), "{name}");
                    read += 1;
                }
                Err(why) => fell_back.push(format!("{name}: {}", why.0)),
            }
        }
        // Every committed fixture is h5py's default format: none may need
        // HDF5's walk.
        assert!(
            fell_back.is_empty(),
            "read {read}; fell back on:\n{}",
            fell_back.join("\n")
        );
    }

    fn reader(b: &[u8]) -> Reader<'_> {
        Reader {
            b,
            eoa: b.len() as u64,
            leaf_k: 4,
            internal_k: 16,
            used: BTreeMap::from([(0, 96)]),
        }
    }

    #[test]
    fn structures_may_not_overlap() {
        let b = vec![0u8; 1000];
        let mut r = reader(&b);
        assert!(r.claim(96, 10, "x").is_ok(), "right after the superblock");
        assert!(r.claim(100, 10, "x").is_err(), "inside another");
        assert!(r.claim(90, 10, "x").is_err(), "over the superblock's end");
        assert!(r.claim(106, 10, "x").is_ok(), "adjacent");
        assert!(r.claim(150, 100, "x").is_ok());
        assert!(r.claim(140, 20, "x").is_err(), "over another's start");
        assert!(r.claim(96, 10, "x").is_err(), "the same bytes twice");
        assert!(r.claim(300, 0, "x").is_err(), "nothing");
    }

    #[test]
    fn names_are_bounded_and_terminated() {
        let mut heap = vec![b'a'; MAX_NAME + 10];
        heap.push(0);
        assert!(name(&heap, 0).is_err(), "longer than MAX_NAME");
        assert_eq!(name(&heap, 20).unwrap().len(), MAX_NAME - 10);
        assert!(name(b"ab", 0).is_err(), "no NUL");
        assert!(name(b"a\0", 2).is_err(), "past the heap");
        assert!(name(b"\xff\0", 0).is_err(), "not UTF-8");
        assert_eq!(name(b"\0vars\0", 1).unwrap(), "vars");
    }

    #[test]
    fn an_allocated_empty_contiguous_dataset_falls_back() {
        let b = vec![0u8; 1000];
        let r = reader(&b);
        let layout = |at: u64, size: u64| {
            let mut m = vec![3u8, 1];
            m.extend_from_slice(&at.to_le_bytes());
            m.extend_from_slice(&size.to_le_bytes());
            m
        };
        assert!(
            r.layout(&layout(500, 0), 0, 0).is_err(),
            "HDF5 2.x refuses it"
        );
        assert!(r.layout(&layout(UNDEF, 0), 0, 0).is_ok(), "never allocated");
        assert!(r.layout(&layout(500, 16), 16, 0).is_ok());
        assert!(r.layout(&layout(990, 16), 16, 0).is_err(), "past the end");
        assert!(
            r.layout(&layout(500, 16), 12, 0).is_err(),
            "not the declared size"
        );
    }

    /// xorshift64*: the same mutants on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Mutants of every fixture's weights: whatever the reader accepts,
    /// HDF5's walk must accept too, reaching the same objects.
    #[test]
    #[allow(clippy::print_stderr)]
    fn accepts_a_mutant_only_when_hdf5_does() {
        let per_file: usize = std::env::var("KREPAIR_HEADERS_MUTANTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut accepted, mut refused) = (0, 0);
        for (name, b) in fixtures() {
            for m in 0..per_file {
                let mut x = b.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(x.len());
                    x[at] = match rng.below(4) {
                        0 => x[at] ^ (1 << rng.below(8)),
                        1 => 0,
                        2 => 0xff,
                        _ => rng.next() as u8,
                    };
                }
                let (verdict, seen) = fast(&x);
                if verdict.is_err() {
                    refused += 1;
                    continue;
                }
                accepted += 1;
                let (h, hseen) = hdf5(&x);
                assert!(
                    h.is_ok(),
                    "{name} mutant {m}: read, but HDF5's walk refuses: {h:?}"
                );
                assert_eq!(seen, hseen, "{name} mutant {m}");
            }
        }
        eprintln!("mutants: {accepted} accepted (HDF5 agreed on each), {refused} refused");
        assert!(
            accepted > 0 && refused > 0,
            "accepted {accepted}, refused {refused}"
        );
    }
}
