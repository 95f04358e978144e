//! Read-only tools over the view: [`inspect`] lists what an archive holds
//! and what a repair or a migration would change; [`diff`] compares two.

pub mod diff;
pub mod inspect;
