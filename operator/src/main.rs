//! The kubectl-aexec operator.

fn main() {
    eprintln!("aexec-operator: not implemented yet (see the operator issue)");
    std::process::exit(2);
}
