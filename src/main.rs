//! The `stencil` binary: everything lives in the library so tests can call
//! `stencil::run` directly; this file only maps its outcome to the process.

fn main() -> std::process::ExitCode {
    stencil::main_with_args(std::env::args_os())
}
