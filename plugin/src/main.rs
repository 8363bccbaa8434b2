//! `kubectl aexec`. The commands arrive with the plugin issue.

fn main() {
    eprintln!("kubectl-aexec: not implemented yet (see the plugin issue)");
    std::process::exit(2);
}
