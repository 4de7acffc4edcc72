//! The `doc-server` binary. The program is [`doc_server::cli::main`]; keeping
//! it in the library means a release build optimises the serve loop once, in
//! one crate, and the binary crate itself is a few lines to compile.

fn main() -> std::process::ExitCode {
    doc_server::cli::main()
}
