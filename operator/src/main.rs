//! The kubectl-aexec operator (see `aexec-operator --help`).

fn main() -> std::process::ExitCode {
    match aexec_operator::run::Args::parse_and_run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aexec-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
