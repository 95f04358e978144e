//! The raw HDF5 call the walk needs and `hdf5-metno` does not wrap:
//! opening an object by name whatever its type (`H5Oopen`), so that the
//! structure walk ([`super::Weights::check_structure`]) looks each name up
//! once. Same signature in HDF5 1.10 and 2.x.

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

/// Copy the object at `src` in `from` to the new link `dst` in the group
/// `to` (of another file): its storage, type, shape and attributes as
/// they are, bit for bit (`H5Ocopy`).
pub(crate) fn copy_object(
    from: &hdf5::File,
    src: &str,
    to: &hdf5::Group,
    dst: &str,
) -> hdf5::Result<()> {
    use hdf5_sys::h5o::H5Ocopy;
    use hdf5_sys::h5p::H5P_DEFAULT;
    let s = std::ffi::CString::new(src).map_err(|_| hdf5::Error::from("a NUL in a name"))?;
    let d = std::ffi::CString::new(dst).map_err(|_| hdf5::Error::from("a NUL in a name"))?;
    hdf5::sync::sync(|| {
        // SAFETY: both locations are open; the names are C strings.
        unsafe {
            hdf5::h5check(H5Ocopy(
                from.id(),
                s.as_ptr(),
                to.id(),
                d.as_ptr(),
                H5P_DEFAULT,
                H5P_DEFAULT,
            ))
            .map(drop)
        }
    })
}
