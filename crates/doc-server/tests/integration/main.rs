//! Integration tests, built as one test binary to keep link times down.

mod abuse;
mod api;
mod binary;
mod common;
mod histogram;
mod http;
mod lifecycle;
mod pressure;
mod smoke;
