//! Sources: one module per input format, each reading its input once and
//! handing the rest of the pipeline the same view ([`crate::view`]).
//!
//! - [`keras`]: the `.keras` archive, as a zip file or as the unzipped
//!   directory `model.save(..., zipped=False)` writes.
//!
//! A new format (legacy HDF5 model files, SavedModel directories) gets a
//! module here that decodes its own structures and then builds the view.

pub mod keras;
