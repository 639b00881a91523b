//! The `lethe` binary: everything lives in the library; see `cli` for commands and exit codes.

fn main() -> std::process::ExitCode {
    lethe::cli::main()
}
