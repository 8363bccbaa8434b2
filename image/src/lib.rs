//! Container images without a container engine: the operator's image from the repository's
//! `Containerfile` (`./dev image`), and the small images the real-node test environment runs
//! (pause, busybox), written as OCI image layouts and archives. See docs/image.md.

pub mod containerfile;
pub mod layer;
pub mod layout;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

pub use layout::{Output, Platform, PlatformImage, RunConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Containerfile line {line}: {message}")]
    Containerfile { line: usize, message: String },
    #[error("{0}")]
    Layer(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Builds the final stage of `containerfile` for each platform. `stages` gives, per platform,
/// the directory standing in for each earlier stage (`build` -> a directory holding the files
/// the build stage would have made, at the same paths).
pub fn build_from_containerfile(
    containerfile: &Path,
    context: &Path,
    build_args: &BTreeMap<String, String>,
    stages: &BTreeMap<Platform, BTreeMap<String, PathBuf>>,
) -> Result<Vec<PlatformImage>, Error> {
    let text = std::fs::read_to_string(containerfile)
        .map_err(|e| Error::Io(format!("reading {}", containerfile.display()), e))?;
    let recipe = containerfile::parse(&text, build_args)?;
    stages
        .iter()
        .map(|(platform, dirs)| {
            Ok(PlatformImage {
                platform: platform.clone(),
                layers: layout::recipe_layers(&recipe, context, dirs)?,
                config: RunConfig::from(&recipe),
            })
        })
        .collect()
}
