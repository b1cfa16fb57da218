//! OCI building blocks: digests, canonical JSON, media types, the layout
//! store and images read from or written into it.

pub mod canonical;
pub mod config;
pub mod digest;
pub mod image;
pub mod layout;
pub mod media;
pub mod mutate;
pub mod referrer;
