//! Writes the generated files (the CRD YAML next to this crate, and the chart's copies of the
//! CRDs, user roles and admission policy), or with `--check` fails when any differs.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = match aexec_crds::generated_files(|f| std::fs::read_to_string(dir.join(f))) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = Vec::new();
    for (file, want) in files {
        let path = dir.join(&file);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have == want {
            continue;
        }
        if check {
            stale.push(file);
        } else if let Err(e) = std::fs::write(&path, want) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {file}");
        }
    }
    if stale.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "crdgen: these generated files differ from their sources (the Rust types, crds/*.yaml): {}\n\
         run `cargo run -p aexec-crds --bin crdgen` and commit the result",
        stale.join(", ")
    );
    ExitCode::FAILURE
}
