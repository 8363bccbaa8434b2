//! Writes the hand-made seeds (`aexec_fuzz::seeds`) into `fuzz/corpus/<target>/`, or into the
//! directory given as the first argument.

use std::path::PathBuf;

use aexec_fuzz::seeds;

fn main() -> std::io::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    for (target, seeds) in [
        ("frames", seeds::frames()),
        ("control_json", seeds::control_json()),
        ("cast_reader", seeds::cast_reader()),
        ("record", seeds::record()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}
