//! Integration tests, built as one test binary to keep link times down.

mod api;
mod binary;
mod common;
mod lifecycle;
