//! Nothing here: the crate holds `tests/aws_sdk_rust.rs`, which drives a Baton server with the
//! AWS SDK for Rust. It is its own crate so that the SDK's dependencies build for that test
//! alone.
