//! The operator's image as `./dev image` wrote it (`dist/`, or `AEXEC_IMAGE_DIR`): minimal,
//! hardened, labelled, both platforms, the same as the Containerfile says, reproducible, and
//! named as the chart expects. Runs outside the test environment (no cluster needed); the
//! real-node tests run the same image in a cluster.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aexec_image::{
    Platform,
    layout::{self, InspectedImage},
};

const BINARY: &str = "/usr/local/bin/aexec-operator";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn layout_dir() -> PathBuf {
    let dir = std::env::var_os("AEXEC_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("dist"));
    let layout = dir.join(format!("aexec-operator_{}_oci", version()));
    assert!(
        layout.join("index.json").exists(),
        "{} is not built: run ./dev image first (./dev test does)",
        layout.display()
    );
    layout
}

fn platform(arch: &str) -> Platform {
    Platform {
        os: "linux".into(),
        arch: arch.into(),
    }
}

fn images() -> (Option<String>, Vec<InspectedImage>) {
    let seen =
        layout::inspect(&layout_dir()).expect("the layout reads back with every digest right");
    (seen.reference, seen.images)
}

/// True when the ELF file has no program interpreter: statically linked, needs no libc.
fn is_static_elf(bytes: &[u8], machine: u16) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    assert_eq!(&bytes[..4], b"\x7fELF", "an ELF file");
    assert_eq!(bytes[4], 2, "64-bit");
    assert_eq!(u16_at(18), machine, "e_machine");
    let (phoff, phentsize, phnum) = (
        u64_at(32) as usize,
        u16_at(54) as usize,
        u16_at(56) as usize,
    );
    // PT_INTERP = 3: the dynamic loader a dynamically linked program names.
    !(0..phnum).any(|i| u32_at(phoff + i * phentsize) == 3)
}

#[test]
fn image_is_minimal_hardened_and_labelled() {
    let (reference, images) = images();
    assert_eq!(
        reference.as_deref(),
        Some(format!("ghcr.io/kubectl-aexec/aexec-operator:{}", version()).as_str())
    );
    let archs: Vec<&str> = images.iter().map(|i| i.platform.arch.as_str()).collect();
    assert_eq!(
        archs,
        vec!["amd64", "arm64"],
        "one image index, both platforms"
    );
    let revision = String::from_utf8(
        std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo())
            .output()
            .expect("git")
            .stdout,
    )
    .expect("utf-8");
    for image in &images {
        let arch = &image.platform.arch;
        let c = &image.config["config"];
        // Non-root, by number (a runtime checks runAsNonRoot without reading /etc/passwd).
        assert_eq!(c["User"], "65532:65532", "{arch}");
        assert_eq!(c["Entrypoint"], serde_json::json!([BINARY]), "{arch}");
        let labels = &c["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], version());
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        assert_eq!(
            labels["org.opencontainers.image.source"],
            "https://github.com/kubectl-aexec/kubectl-aexec"
        );
        let rev = labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(rev.len(), 40, "a full commit id: {rev}");
        assert!(
            revision.trim() == rev || std::env::var_os("AEXEC_IMAGE_ANY_REVISION").is_some(),
            "the image was built from {rev}, this checkout is {}: run ./dev image again",
            revision.trim()
        );
        // Nothing but the binary, its CA bundle and the user database: no shell, no package
        // manager, no libc.
        let files: Vec<&str> = image
            .files
            .iter()
            .filter(|(_, (_, _, kind))| !kind.is_dir())
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(
            files,
            vec![
                "/etc/group",
                "/etc/passwd",
                "/etc/ssl/certs/ca-certificates.crt",
                BINARY
            ],
            "{arch}"
        );
        let (mode, size, _) = image.files[BINARY];
        assert_eq!(
            mode, 0o755,
            "{arch}: root-owned, not writable by the process"
        );
        let mib = image.uncompressed as f64 / (1 << 20) as f64;
        eprintln!(
            "linux/{arch}: {mib:.1} MiB uncompressed (binary {:.1} MiB)",
            size as f64 / (1 << 20) as f64
        );
        assert!(
            image.uncompressed < 30 << 20,
            "linux/{arch} is {mib:.1} MiB: the aim is under 30 MiB"
        );
    }
}

#[test]
fn image_binaries_are_static_and_start_on_both_platforms() {
    let dir = tempfile::tempdir().expect("tmp");
    for (arch, machine, runner) in [("amd64", 62, None), ("arm64", 183, Some("qemu-aarch64"))] {
        let bin = dir.path().join(format!("aexec-operator-{arch}"));
        layout::extract(&layout_dir(), &platform(arch), BINARY, &bin).expect("extract");
        let bytes = std::fs::read(&bin).expect("read");
        assert!(
            is_static_elf(&bytes, machine),
            "linux/{arch}: statically linked"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut cmd = match runner {
            // Debian's qemu-user runs the foreign binary (no binfmt registration needed).
            Some(qemu) => {
                let mut c = std::process::Command::new(qemu);
                c.arg(&bin);
                c
            }
            None => std::process::Command::new(&bin),
        };
        let out = cmd.arg("--version").output().unwrap_or_else(|e| {
            panic!("running the linux/{arch} binary: {e} (apt-get install qemu-user)")
        });
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "linux/{arch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.trim(),
            format!("aexec-operator {}", version()),
            "linux/{arch}"
        );
        eprintln!("linux/{arch}: {}", text.trim());
    }
}

#[test]
fn image_is_what_the_containerfile_says_and_reproducible() {
    let (_, images) = images();
    let labels = &images[0].config["config"]["Labels"];
    let build_args: BTreeMap<String, String> = [
        (
            "VERSION",
            labels["org.opencontainers.image.version"].as_str(),
        ),
        (
            "REVISION",
            labels["org.opencontainers.image.revision"].as_str(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.unwrap_or_default().to_owned()))
    .collect();
    let text = std::fs::read_to_string(repo().join("Containerfile")).expect("Containerfile");
    let recipe = aexec_image::containerfile::parse(&text, &build_args).expect("it parses");
    for image in &images {
        let c = &image.config["config"];
        assert_eq!(c["User"].as_str(), recipe.user.as_deref());
        assert_eq!(
            c["Entrypoint"],
            serde_json::to_value(&recipe.entrypoint).expect("json")
        );
        let want_labels = serde_json::to_value(&recipe.labels).expect("json");
        assert_eq!(c["Labels"], want_labels);
        let ports: Vec<&String> = c["ExposedPorts"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(ports.len(), recipe.exposed_ports.len());
        // One layer per COPY, in order, each saying which instruction made it.
        let history: Vec<&str> = image.config["history"]
            .as_array()
            .expect("history")
            .iter()
            .filter_map(|h| h["created_by"].as_str())
            .collect();
        let copies: Vec<&str> = recipe.copies.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(history, copies);
    }
    // Rebuilt from the same inputs (the stand-ins `./dev image` left for the build stage),
    // the image has the same digests.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let stages_root = target.join("image-stages");
    if !stages_root.exists() {
        panic!(
            "{} is missing: run ./dev image first",
            stages_root.display()
        );
    }
    let mut stages = BTreeMap::new();
    for arch in ["amd64", "arm64"] {
        let mut dirs = BTreeMap::new();
        dirs.insert(
            "build".to_owned(),
            stages_root.join(format!("linux-{arch}/build")),
        );
        stages.insert(platform(arch), dirs);
    }
    let rebuilt = aexec_image::build_from_containerfile(
        &repo().join("Containerfile"),
        &repo(),
        &build_args,
        &stages,
    )
    .expect("rebuild");
    let created = images[0].config["created"].as_str().expect("created");
    let epoch = chrono::DateTime::parse_from_rfc3339(created)
        .expect("rfc3339")
        .timestamp() as u64;
    let tmp = tempfile::tempdir().expect("tmp");
    let reference = format!("ghcr.io/kubectl-aexec/aexec-operator:{}", version());
    let again = layout::write_layout(tmp.path(), &reference, &rebuilt, epoch).expect("write");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout_dir().join("index.json")).expect("index.json"),
    )
    .expect("json");
    assert_eq!(index["manifests"][0]["digest"], again.top.digest.as_str());
}

#[test]
fn image_name_is_the_charts_default() {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/aexec-operator/values.yaml")).expect("values"),
    )
    .expect("yaml");
    let chart: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/aexec-operator/Chart.yaml")).expect("Chart"),
    )
    .expect("yaml");
    let repository = values["image"]["repository"]
        .as_str()
        .expect("image.repository");
    let tag = match values["image"]["tag"].as_str() {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => chart["appVersion"].as_str().expect("appVersion").to_owned(),
    };
    assert_eq!(
        tag,
        version(),
        "the chart's appVersion is the crate's version"
    );
    let (reference, _) = images();
    assert_eq!(reference, Some(format!("{repository}:{tag}")));
}
