//! `kubectl_complete-aexec`: kubectl (1.26+) runs it with the words typed after `kubectl aexec`
//! to complete them (cobra's `__complete` protocol).

fn main() {
    std::process::exit(kubectl_aexec::complete(std::env::args().skip(1)));
}
