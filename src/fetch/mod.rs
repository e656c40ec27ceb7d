//! Fetching from upstream nodes over SPP. [`client`] is one upstream connection;
//! later releases add source selection and caches on top of it.

pub mod client;
