//! `aexec-image`: builds the operator's image from the Containerfile without a container
//! engine (`./dev image` runs it), and reads images back.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
};

use aexec_image::{Platform, layout};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Build OCI images from a Containerfile's final stage, without a container engine"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Apply the final stage of a Containerfile for each platform and write an OCI layout (and
    /// optionally an OCI archive). Earlier stages are not run: for each platform, the directory
    /// STAGES/<os>-<arch>/<stage>/ stands in for that stage's file system.
    Build {
        /// The Containerfile (Dockerfile syntax).
        #[arg(long, default_value = "Containerfile")]
        containerfile: PathBuf,
        /// The build context (`COPY` without `--from` reads from here).
        #[arg(long, default_value = ".")]
        context: PathBuf,
        /// Where the stand-ins for earlier stages are: STAGES/<os>-<arch>/<stage>/.
        #[arg(long)]
        stages: PathBuf,
        /// A platform to build, OS/ARCH; repeat for a multi-platform image index.
        #[arg(long = "platform", required = true)]
        platforms: Vec<Platform>,
        /// The image's name, REPOSITORY:TAG.
        #[arg(long)]
        tag: String,
        /// KEY=VALUE, overriding an ARG's default, as `docker build --build-arg`.
        #[arg(long = "build-arg", value_parser = key_value)]
        build_args: Vec<(String, String)>,
        /// The OCI image layout directory to write (replaced if present).
        #[arg(long)]
        oci_dir: PathBuf,
        /// Also write the layout as one OCI archive (a tar) here.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// Timestamp of every file and of the image (seconds since 1970): the same sources and
        /// timestamp give the same digests.
        #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
        source_date_epoch: u64,
    },
    /// Print what an OCI layout holds (checking every digest): per platform the config, and
    /// the files with their modes and sizes.
    Inspect { oci_dir: PathBuf },
    /// Copy one file out of a platform's image in an OCI layout.
    Extract {
        oci_dir: PathBuf,
        #[arg(long)]
        platform: Platform,
        path: String,
        out: PathBuf,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aexec-image: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Cmd::Build {
            containerfile,
            context,
            stages,
            platforms,
            tag,
            build_args,
            oci_dir,
            archive,
            source_date_epoch,
        } => {
            let mut per_platform = BTreeMap::new();
            for p in &platforms {
                let root = stages.join(format!("{}-{}", p.os, p.arch));
                if !root.is_dir() {
                    bail!(
                        "{} does not exist: build the earlier stages for {p} first (./dev image does)",
                        root.display()
                    );
                }
                let mut dirs = BTreeMap::new();
                for e in std::fs::read_dir(&root)
                    .with_context(|| format!("listing {}", root.display()))?
                {
                    let e = e?;
                    if let Some(name) = e.file_name().to_str() {
                        dirs.insert(name.to_owned(), e.path());
                    }
                }
                per_platform.insert(p.clone(), dirs);
            }
            let build_args: BTreeMap<String, String> = build_args.into_iter().collect();
            let images = aexec_image::build_from_containerfile(
                &containerfile,
                &context,
                &build_args,
                &per_platform,
            )?;
            let out = layout::write_layout(&oci_dir, &tag, &images, source_date_epoch)?;
            println!("{tag}  ({} {})", out.top.media_type, out.top.digest);
            for w in &out.images {
                println!(
                    "  {:<12} {}  {} uncompressed, {} compressed",
                    w.platform.to_string(),
                    w.manifest.digest,
                    mib(w.uncompressed),
                    mib(w.compressed)
                );
            }
            println!("OCI layout: {}", oci_dir.display());
            if let Some(a) = archive {
                let size = layout::write_archive(&oci_dir, &a, source_date_epoch)?;
                println!("OCI archive: {} ({})", a.display(), mib(size));
            }
            Ok(())
        }
        Cmd::Inspect { oci_dir } => inspect(&oci_dir),
        Cmd::Extract {
            oci_dir,
            platform,
            path,
            out,
        } => Ok(layout::extract(&oci_dir, &platform, &path, &out)?),
    }
}

fn inspect(dir: &Path) -> Result<()> {
    let seen = layout::inspect(dir)?;
    println!("{}", seen.reference.as_deref().unwrap_or("(no name)"));
    for i in &seen.images {
        println!("{} ({} uncompressed)", i.platform, mib(i.uncompressed));
        println!("{}", serde_json::to_string_pretty(&i.config["config"])?);
        for (path, (mode, size, kind)) in &i.files {
            println!("  {mode:04o} {size:>10} {kind:?} {path}");
        }
    }
    Ok(())
}
