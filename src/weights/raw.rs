//! The raw HDF5 calls krepair needs and `hdf5-metno` does not wrap:
//! opening an object by name whatever its type (`H5Oopen`), so that the
//! structure walk ([`super::Weights::check_structure`]) looks each name up
//! once; reading a fixed-length string attribute within a byte budget;
//! copying a dataset's values in its own type, in slabs. Same signatures
//! in HDF5 1.10 and 2.x.

#![allow(unsafe_code)]

use super::Object;

/// Open the object that `name` links to in `g`, whatever it is: one name
/// lookup, where asking its type first and then opening it takes two.
pub(crate) fn open_object(g: &hdf5::Group, name: &str) -> hdf5::Result<Object> {
    use hdf5_sys::h5i::{H5I_type_t, H5Iget_type};
    use hdf5_sys::h5o::{H5Oclose, H5Oopen};
    use hdf5_sys::h5p::H5P_DEFAULT;
    let cname = std::ffi::CString::new(name).map_err(|_| hdf5::Error::from("a NUL in a name"))?;
    hdf5::sync::sync(|| {
        // SAFETY: `g` is an open group and `cname` a C string; the new id
        // is owned here: handed to a handle of its own type, or closed.
        unsafe {
            let id = hdf5::h5check(H5Oopen(g.id(), cname.as_ptr(), H5P_DEFAULT))?;
            match H5Iget_type(id) {
                H5I_type_t::H5I_GROUP => hdf5::from_id(id).map(Object::Group),
                H5I_type_t::H5I_DATASET => hdf5::from_id(id).map(Object::Dataset),
                _ => {
                    H5Oclose(id);
                    Ok(Object::Other)
                }
            }
        }
    })
}

/// The values of a fixed-length string attribute (what h5py writes for a
/// NumPy `bytes` value or array: `model_config`, `weight_names`), each
/// with its padding (NULs) cut, if the attribute is one and holds at most
/// `max_bytes` bytes in all; None if it is of another type.
pub(crate) fn read_fixed_strings(
    a: &hdf5::Attribute,
    max_bytes: usize,
) -> hdf5::Result<Option<Vec<Vec<u8>>>> {
    use hdf5_sys::h5a::{H5Aget_space, H5Aget_type, H5Aread};
    use hdf5_sys::h5s::{H5Sclose, H5Sget_simple_extent_npoints};
    use hdf5_sys::h5t::{H5T_class_t, H5Tclose, H5Tget_class, H5Tget_size, H5Tis_variable_str};
    hdf5::sync::sync(|| {
        // SAFETY: `a` is an open attribute; the type and space ids made
        // here are closed before returning, and H5Aread writes at most
        // count * size bytes (both checked, the product bounded) into a
        // buffer of exactly that length, in the attribute's own type.
        unsafe {
            let t = hdf5::h5check(H5Aget_type(a.id()))?;
            let result = (|| {
                if H5Tget_class(t) != H5T_class_t::H5T_STRING || H5Tis_variable_str(t) != 0 {
                    return Ok(None);
                }
                let size = H5Tget_size(t);
                let s = hdf5::h5check(H5Aget_space(a.id()))?;
                let n = H5Sget_simple_extent_npoints(s);
                H5Sclose(s);
                let count =
                    usize::try_from(n).map_err(|_| hdf5::Error::from("a negative count"))?;
                let total = count
                    .checked_mul(size)
                    .filter(|&b| b <= max_bytes && size > 0)
                    .ok_or_else(|| hdf5::Error::from("a string attribute over the limit"))?;
                let mut buf = vec![0u8; total];
                hdf5::h5check(H5Aread(a.id(), t, buf.as_mut_ptr().cast()))?;
                Ok(Some(
                    buf.chunks(size)
                        .map(|c| {
                            let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                            c[..end].to_vec()
                        })
                        .collect(),
                ))
            })();
            H5Tclose(t);
            result
        }
    })
}

/// Bytes read and written at once by [`copy_values`]: a larger dataset
/// goes in slabs of whole rows, so memory stays flat in its size.
const SLAB_BYTES: u64 = 64 << 20;

/// Copy the values of the dataset `src` into a new dataset `dst` of the
/// group `to` (of another file): the same datatype (byte order
/// included), shape and bytes, read and written in that type (no
/// conversion), nothing else of the source object (its attributes and
/// other header messages stay behind, unread). The type must be a float
/// or an integer: anything else is refused. The caller has checked the
/// dataset's layout and sizes ([`super::Weights::check_structure`]).
pub(crate) fn copy_values(src: &hdf5::Dataset, to: &hdf5::Group, dst: &str) -> hdf5::Result<()> {
    copy_values_in(src, to, dst, SLAB_BYTES)
}

/// [`copy_values`] in slabs of at most `slab` bytes.
fn copy_values_in(src: &hdf5::Dataset, to: &hdf5::Group, dst: &str, slab: u64) -> hdf5::Result<()> {
    use hdf5_sys::h5d::{H5Dclose, H5Dcreate2, H5Dget_space, H5Dget_type};
    use hdf5_sys::h5p::H5P_DEFAULT;
    use hdf5_sys::h5s::H5Sclose;
    use hdf5_sys::h5t::{H5T_class_t, H5Tclose, H5Tget_class, H5Tget_size};
    let d = std::ffi::CString::new(dst).map_err(|_| hdf5::Error::from("a NUL in a name"))?;
    let shape: Vec<u64> = src.shape().into_iter().map(|n| n as u64).collect();
    hdf5::sync::sync(|| {
        // SAFETY: `src` and `to` are open; every id made here is closed
        // here; the buffer holds exactly the selected elements of `size`
        // bytes each.
        unsafe {
            let t = hdf5::h5check(H5Dget_type(src.id()))?;
            let result = (|| {
                if !matches!(
                    H5Tget_class(t),
                    H5T_class_t::H5T_FLOAT | H5T_class_t::H5T_INTEGER
                ) {
                    return Err(hdf5::Error::from("not a float or integer dataset"));
                }
                let size = H5Tget_size(t) as u64;
                if size == 0 || size > 16 {
                    return Err(hdf5::Error::from("an element size out of range"));
                }
                let space = hdf5::h5check(H5Dget_space(src.id()))?;
                let out = hdf5::h5check(H5Dcreate2(
                    to.id(),
                    d.as_ptr(),
                    t,
                    space,
                    H5P_DEFAULT,
                    H5P_DEFAULT,
                    H5P_DEFAULT,
                ));
                H5Sclose(space);
                let out = out?;
                let copied = copy_slabs(src.id(), out, t, size, &shape, slab);
                H5Dclose(out);
                copied
            })();
            H5Tclose(t);
            result
        }
    })
}

/// Read `src` and write `out` (both of type `t`, elements of `size`
/// bytes, the same `shape`) in slabs of whole rows of at most `slab`
/// bytes (one row if a row is larger).
///
/// # Safety
/// `src`, `out` and `t` are open ids; call inside `hdf5::sync::sync`.
unsafe fn copy_slabs(
    src: hdf5_sys::h5i::hid_t,
    out: hdf5_sys::h5i::hid_t,
    t: hdf5_sys::h5i::hid_t,
    size: u64,
    shape: &[u64],
    slab: u64,
) -> hdf5::Result<()> {
    use hdf5_sys::h5d::{H5Dget_space, H5Dread, H5Dwrite};
    use hdf5_sys::h5p::H5P_DEFAULT;
    use hdf5_sys::h5s::{H5S_seloper_t, H5Sclose, H5Screate_simple, H5Sselect_hyperslab, H5S_ALL};
    let elements = shape
        .iter()
        .try_fold(1u64, |a, &n| a.checked_mul(n))
        .ok_or_else(|| hdf5::Error::from("a shape that overflows"))?;
    let total = elements
        .checked_mul(size)
        .ok_or_else(|| hdf5::Error::from("a size that overflows"))?;
    if shape.is_empty() || total <= slab {
        // A scalar, or small enough for one read.
        let n = usize::try_from(total).map_err(|_| hdf5::Error::from("too large"))?;
        let mut buf = vec![0u8; n.max(1)];
        hdf5::h5check(H5Dread(
            src,
            t,
            H5S_ALL,
            H5S_ALL,
            H5P_DEFAULT,
            buf.as_mut_ptr().cast(),
        ))?;
        hdf5::h5check(H5Dwrite(
            out,
            t,
            H5S_ALL,
            H5S_ALL,
            H5P_DEFAULT,
            buf.as_ptr().cast(),
        ))?;
        return Ok(());
    }
    let row = total / shape[0].max(1);
    let rows = (slab / row.max(1)).max(1);
    let mut start = 0u64;
    while start < shape[0] {
        let count = rows.min(shape[0] - start);
        let mut dims = shape.to_vec();
        dims[0] = count;
        let mut offset = vec![0u64; shape.len()];
        offset[0] = start;
        let n = usize::try_from(count * row).map_err(|_| hdf5::Error::from("too large"))?;
        let mut buf = vec![0u8; n];
        let mem = hdf5::h5check(H5Screate_simple(
            dims.len() as _,
            dims.as_ptr(),
            std::ptr::null(),
        ))?;
        let (fs, os) = (H5Dget_space(src), H5Dget_space(out));
        let done = (|| {
            hdf5::h5check(fs)?;
            hdf5::h5check(os)?;
            for s in [fs, os] {
                hdf5::h5check(H5Sselect_hyperslab(
                    s,
                    H5S_seloper_t::H5S_SELECT_SET,
                    offset.as_ptr(),
                    std::ptr::null(),
                    dims.as_ptr(),
                    std::ptr::null(),
                ))?;
            }
            hdf5::h5check(H5Dread(
                src,
                t,
                mem,
                fs,
                H5P_DEFAULT,
                buf.as_mut_ptr().cast(),
            ))?;
            hdf5::h5check(H5Dwrite(out, t, mem, os, H5P_DEFAULT, buf.as_ptr().cast()))
        })();
        for s in [mem, fs, os] {
            if s >= 0 {
                H5Sclose(s);
            }
        }
        done?;
        start += count;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_copied_to_the_bit_in_their_own_type_whatever_the_slab() {
        let t = tempfile::tempdir().unwrap();
        let src = hdf5::File::create(t.path().join("a.h5")).unwrap();
        let values: Vec<f32> = (0..37 * 5).map(|i| (i as f32).sin() * 1e-3).collect();
        let ds = src.new_dataset::<f32>().shape([37, 5]).create("w").unwrap();
        ds.write_raw(&values).unwrap();
        src.new_dataset::<i64>()
            .create("n")
            .unwrap()
            .write_scalar(&7i64)
            .unwrap();
        src.new_dataset::<u8>()
            .shape([0, 3])
            .create("empty")
            .unwrap();
        let strings = src
            .new_dataset::<hdf5::types::VarLenUnicode>()
            .shape([1])
            .create("s")
            .unwrap();
        let out = hdf5::File::create(t.path().join("b.h5")).unwrap();
        // 60 bytes: three rows of 20 per slab, the last slab one row.
        copy_values_in(&ds, &out, "w", 60).unwrap();
        copy_values_in(&ds, &out, "w_whole", SLAB_BYTES).unwrap();
        copy_values_in(&src.dataset("n").unwrap(), &out, "n", 60).unwrap();
        copy_values_in(&src.dataset("empty").unwrap(), &out, "empty", 60).unwrap();
        let e = copy_values_in(&strings, &out, "s", 60).unwrap_err();
        assert!(e.to_string().contains("not a float or integer"), "{e}");
        for name in ["w", "w_whole"] {
            let got = out.dataset(name).unwrap();
            assert_eq!(got.shape(), vec![37, 5]);
            let bits: Vec<u32> = got
                .read_raw::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let want: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
            assert_eq!(bits, want, "{name}");
        }
        assert_eq!(out.dataset("n").unwrap().read_scalar::<i64>().unwrap(), 7);
        assert_eq!(out.dataset("empty").unwrap().shape(), vec![0, 3]);
    }
}
