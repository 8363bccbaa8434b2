//! The kubectl-aexec operator (see `aexec-operator --help`).

// The static (musl) build, the image's: with musl's malloc it spent 1.15-1.38x the glibc build's
// CPU per MiB relayed; with mimalloc (no transparent huge pages: Cargo.toml), about the same as
// glibc's, at the same memory. docs/performance.md ("The shipped build and its allocator").
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match aexec_operator::run::Args::parse_and_run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aexec-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
