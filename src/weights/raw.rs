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
