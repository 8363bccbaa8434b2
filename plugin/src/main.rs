//! `kubectl-aexec`: run as `kubectl aexec` through kubectl's plugin discovery.

fn main() {
    std::process::exit(kubectl_aexec::run(std::env::args_os()));
}
