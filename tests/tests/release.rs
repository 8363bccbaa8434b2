//! The release as `./dev release VERSION` wrote it (`AEXEC_RELEASE_DIR`; `./dev test` builds one
//! into the target directory and runs these): every artifact present, the checksums right, each
//! binary in the right format for its platform and the arm64 ones running under qemu-user, the
//! krew manifest passing krew's own validator and installing offline with the real krew, the
//! chart's default image tag the version, the image index holding both platforms, and the SBOMs
//! listing the dependencies of each platform. No cluster is needed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use aexec_image::layout;
use aexec_testenv::upstream::Upstream;

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The platforms the plugin is released for, as krew names them, with their archive's suffix.
const PLUGIN_PLATFORMS: [(&str, &str, &str); 3] = [
    ("linux", "amd64", "tar.gz"),
    ("linux", "arm64", "tar.gz"),
    ("windows", "amd64", "zip"),
];

fn release_dir() -> PathBuf {
    let dir = std::env::var_os("AEXEC_RELEASE_DIR")
        .map(PathBuf::from)
        .expect(
            "AEXEC_RELEASE_DIR is not set: build a release with ./dev release VERSION and point \
         AEXEC_RELEASE_DIR at it (./dev test does both)",
        );
    assert!(
        dir.join("SHA256SUMS").exists(),
        "{} holds no release (no SHA256SUMS): run ./dev release {}",
        dir.display(),
        version()
    );
    dir
}

fn archive_name(os: &str, arch: &str, ext: &str) -> String {
    format!("kubectl-aexec_v{}_{os}_{arch}.{ext}", version())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The archive for a platform, unpacked into a new directory.
fn unpack(os: &str, arch: &str, ext: &str) -> tempfile::TempDir {
    let archive = release_dir().join(archive_name(os, arch, ext));
    let dir = tempfile::tempdir().expect("tempdir");
    if ext == "zip" {
        ok(Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&archive)
            .arg(dir.path()));
    } else {
        ok(Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(dir.path()));
    }
    dir
}

/// The SHA-256 that SHA256SUMS gives for `name`.
fn sum_of(sums: &str, name: &str) -> String {
    sums.lines()
        .find_map(|l| l.strip_suffix(&format!("  {name}")))
        .unwrap_or_else(|| panic!("{name} is not in SHA256SUMS:\n{sums}"))
        .to_owned()
}

fn file_type(path: &Path) -> String {
    ok(Command::new("file").arg("-b").arg(path))
}

#[test]
fn release_has_every_artifact_and_its_checksum() {
    let dir = release_dir();
    let v = version();
    let mut want: Vec<String> = PLUGIN_PLATFORMS
        .iter()
        .map(|(os, arch, ext)| archive_name(os, arch, ext))
        .collect();
    want.extend(
        PLUGIN_PLATFORMS
            .iter()
            .map(|(os, arch, _)| format!("kubectl-aexec_v{v}_{os}_{arch}.cdx.json")),
    );
    want.extend(
        ["amd64", "arm64"].map(|arch| format!("aexec-operator_v{v}_linux_{arch}.cdx.json")),
    );
    want.push("aexec.yaml".into());
    want.push(format!("aexec-operator_{v}.oci.tar"));
    want.push(format!("aexec-operator-{v}.tgz"));
    want.sort();
    let mut have: Vec<String> = std::fs::read_dir(&dir)
        .expect("release dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS")
        .collect();
    have.sort();
    assert_eq!(have, want, "the release's files");

    // SHA256SUMS names every file, and each checksum is right.
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("SHA256SUMS");
    let mut listed: Vec<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).expect("a name"))
        .collect();
    listed.sort();
    assert_eq!(listed, want, "SHA256SUMS lists every file once");
    let check = ok(Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(&dir));
    assert_eq!(
        check.lines().filter(|l| l.ends_with(": OK")).count(),
        want.len()
    );

    // The check can fail: one changed byte in a copy of an archive is caught.
    let copy = tempfile::tempdir().expect("tempdir");
    for name in want.iter().chain(std::iter::once(&"SHA256SUMS".to_owned())) {
        std::fs::copy(dir.join(name), copy.path().join(name)).expect("copy");
    }
    let victim = copy.path().join(archive_name("linux", "arm64", "tar.gz"));
    let mut bytes = std::fs::read(&victim).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, bytes).expect("write");
    let tampered = run(Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(copy.path()));
    assert!(!tampered.status.success(), "a changed archive must fail");
    assert!(
        text(&tampered.stdout).contains(&format!(
            "{}: FAILED",
            archive_name("linux", "arm64", "tar.gz")
        )),
        "{}",
        text(&tampered.stdout)
    );

    // The krew manifest carries each archive's checksum, and no darwin entry (not built here:
    // docs/release.md says why).
    let manifest = std::fs::read_to_string(dir.join("aexec.yaml")).expect("manifest");
    for (os, arch, ext) in PLUGIN_PLATFORMS {
        let name = archive_name(os, arch, ext);
        let sha = sum_of(&sums, &name);
        assert!(
            manifest.contains(&format!("sha256: \"{sha}\"")),
            "{name}'s sha256 in the manifest:\n{manifest}"
        );
        assert!(manifest.contains(&format!("/{name}\n")), "{manifest}");
    }
    assert!(!manifest.contains("darwin"), "{manifest}");
    assert!(!manifest.contains("{{"), "no placeholder left:\n{manifest}");
}

#[test]
fn release_binaries_are_built_for_their_platform() {
    for (os, arch, ext) in PLUGIN_PLATFORMS {
        let dir = unpack(os, arch, ext);
        let exe = if os == "windows" { ".exe" } else { "" };
        for bin in ["kubectl-aexec", "kubectl_complete-aexec"] {
            let path = dir.path().join(format!("{bin}{exe}"));
            let kind = file_type(&path);
            let want: &[&str] = match (os, arch) {
                ("linux", "amd64") => &["ELF 64-bit LSB", "x86-64", "statically linked"],
                ("linux", "arm64") => &["ELF 64-bit LSB", "ARM aarch64", "statically linked"],
                ("windows", "amd64") => &["PE32+ executable", "x86-64", "MS Windows"],
                other => panic!("no expectation for {other:?}"),
            };
            for w in want {
                assert!(kind.contains(w), "{os}/{arch} {bin}: {kind}");
            }
            if os == "linux" {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
                assert_eq!(mode & 0o111, 0o111, "{bin} is executable: {mode:o}");
            }
        }
        for doc in ["README.md", "LICENSE"] {
            assert!(dir.path().join(doc).exists(), "{os}/{arch}: {doc}");
        }
    }
}

#[test]
fn release_binaries_print_their_version() {
    let want = format!("kubectl-aexec {}", version());
    // amd64 natively, arm64 under qemu-user (Debian's qemu-user; ./dev installs it).
    let amd64 = unpack("linux", "amd64", "tar.gz");
    let out = ok(Command::new(amd64.path().join("kubectl-aexec")).arg("--version"));
    assert_eq!(out.trim(), want);
    let out = ok(Command::new(amd64.path().join("kubectl-aexec")).args(["version", "--client"]));
    assert_eq!(out.trim(), format!("Client Version: v{}", version()));

    let arm64 = unpack("linux", "arm64", "tar.gz");
    let out = ok(Command::new("qemu-aarch64")
        .arg(arm64.path().join("kubectl-aexec"))
        .arg("--version"));
    assert_eq!(out.trim(), want, "the arm64 plugin under qemu-aarch64");
    let out = ok(Command::new("qemu-aarch64")
        .arg(arm64.path().join("kubectl-aexec"))
        .args(["version", "--client", "-o", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        doc["clientVersion"]["version"],
        format!("v{}", version()).as_str()
    );

    // Windows: no Windows here to run it; its version string is in the binary.
    let win = unpack("windows", "amd64", "zip");
    let bytes = std::fs::read(win.path().join("kubectl-aexec.exe")).expect("exe");
    assert_eq!(&bytes[..2], b"MZ", "a DOS/PE header");
    assert!(
        bytes
            .windows(version().len())
            .any(|w| w == version().as_bytes()),
        "the version is in the Windows binary"
    );
}

/// krew's own validator (from krew's Go module), then offline installs with the real krew: the
/// host's archive runs; the arm64 one installs for arm64 (krew's KREW_ARCH) and runs under qemu;
/// a wrong checksum is refused.
#[test]
fn release_krew_manifest_validates_and_installs() {
    let dir = release_dir();
    let paths = Upstream::paths().expect("build.sh --paths");
    let validator = paths["validate-krew-manifest"].clone();
    assert!(
        validator.exists(),
        "krew's validator is not built ({}): bash tests/upstream/build.sh krew",
        validator.display()
    );
    // The validator's own install step downloads each platform's URI, which is not published
    // (and there is no internet here): -skip-install, and the installs are done below from the
    // archives, with the validator's license check too.
    ok(Command::new(&validator)
        .arg("-manifest")
        .arg(dir.join("aexec.yaml"))
        .arg("-skip-install"));

    // The validator can fail: a manifest without a platform for this machine's sha256 is refused.
    let broken = tempfile::tempdir().expect("tempdir");
    let manifest = std::fs::read_to_string(dir.join("aexec.yaml")).expect("manifest");
    let bad = manifest.replacen("sha256: \"", "sha256: \"zz", 1);
    std::fs::write(broken.path().join("aexec.yaml"), bad).expect("write");
    let refused = run(Command::new(&validator)
        .arg("-manifest")
        .arg(broken.path().join("aexec.yaml"))
        .arg("-skip-install"));
    assert!(
        !refused.status.success(),
        "the validator accepted a bad sha256: {}",
        text(&refused.stdout)
    );

    let krew = paths["krew"].clone();
    let kubectl = paths["kubectl"].clone();
    let install = |os: &str, arch: &str, ext: &str, manifest: &Path| {
        let home = tempfile::tempdir().expect("tempdir");
        let bin = home.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        std::os::unix::fs::symlink(&krew, bin.join("kubectl-krew")).expect("link krew");
        let root = home.path().join("krew");
        let path = std::env::join_paths([
            bin.clone(),
            root.join("bin"),
            "/usr/bin".into(),
            "/bin".into(),
        ])
        .expect("PATH");
        let out = run(Command::new(&kubectl)
            .args(["krew", "install"])
            .arg(format!("--manifest={}", manifest.display()))
            .arg(format!(
                "--archive={}",
                dir.join(archive_name(os, arch, ext)).display()
            ))
            .env("PATH", &path)
            .env("KREW_ROOT", &root)
            .env("KREW_OS", os)
            .env("KREW_ARCH", arch)
            .env("KREW_NO_UPGRADE_CHECK", "1")
            .env("HOME", home.path()));
        (home, root, path, out)
    };

    // This machine's platform, run as kubectl runs plugins.
    let (_home, root, path, out) = install("linux", "amd64", "tar.gz", &dir.join("aexec.yaml"));
    assert!(
        out.status.success(),
        "krew install: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let v = ok(Command::new(&kubectl)
        .args(["aexec", "version", "--client"])
        .env("PATH", &path)
        .env("KREW_ROOT", &root));
    assert_eq!(v.trim(), format!("Client Version: v{}", version()));
    // krew-index requires a license file among the installed files (the validator checks it
    // after each install).
    let installed = root.join(format!("store/aexec/v{}", version()));
    assert!(
        installed.join("LICENSE").is_file(),
        "LICENSE installed in {}",
        installed.display()
    );

    // arm64, as krew on an arm64 machine installs it.
    let (_home, root, _path, out) = install("linux", "arm64", "tar.gz", &dir.join("aexec.yaml"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = ok(Command::new("qemu-aarch64")
        .arg(root.join("bin/kubectl-aexec"))
        .arg("--version"));
    assert_eq!(v.trim(), format!("kubectl-aexec {}", version()));

    // windows: krew installs the .exe (its link is named after the bin).
    let (_home, root, _path, out) = install("windows", "amd64", "zip", &dir.join("aexec.yaml"));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let installed = std::fs::read_dir(root.join("bin"))
        .expect("krew bin")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        installed.iter().any(|n| n.starts_with("kubectl-aexec")),
        "{installed:?}"
    );

    // A checksum that does not match the archive is refused.
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("sums");
    let amd64_sum = sum_of(&sums, &archive_name("linux", "amd64", "tar.gz"));
    let wrong = broken.path().join("aexec.yaml");
    std::fs::write(&wrong, manifest.replace(&amd64_sum, &"0".repeat(64))).expect("write");
    let (_home, root, _path, out) = install("linux", "amd64", "tar.gz", &wrong);
    assert!(!out.status.success(), "krew installed a wrong checksum");
    assert!(
        text(&out.stderr).to_lowercase().contains("checksum")
            || text(&out.stderr).to_lowercase().contains("sha256"),
        "{}",
        text(&out.stderr)
    );
    assert!(!root.join("bin/kubectl-aexec").exists());
}

#[test]
fn release_chart_defaults_to_the_version() {
    let dir = release_dir();
    let chart = dir.join(format!("aexec-operator-{}.tgz", version()));
    let helm = Upstream::locate().expect("upstream").helm;
    let shown = ok(Command::new(&helm).arg("show").arg("chart").arg(&chart));
    assert!(
        shown.contains(&format!("\nversion: {}\n", version())),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("appVersion: {}", version())),
        "{shown}"
    );
    let rendered = ok(Command::new(&helm)
        .args(["template", "aexec"])
        .arg(&chart)
        .args(["--namespace", "aexec-system", "--kube-version", "v1.35.4"]));
    let image = format!(
        "image: \"ghcr.io/kubectl-aexec/aexec-operator:{}\"",
        version()
    );
    assert!(
        rendered.contains(&image),
        "the default image is {image}:\n{}",
        rendered
            .lines()
            .filter(|l| l.contains("image:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn release_image_index_has_both_platforms() {
    let dir = release_dir();
    let unpacked = tempfile::tempdir().expect("tempdir");
    ok(Command::new("tar")
        .arg("-xf")
        .arg(dir.join(format!("aexec-operator_{}.oci.tar", version())))
        .arg("-C")
        .arg(unpacked.path()));
    let seen = layout::inspect(unpacked.path()).expect("the archive's layout reads back");
    assert_eq!(
        seen.reference.as_deref(),
        Some(format!("ghcr.io/kubectl-aexec/aexec-operator:{}", version()).as_str())
    );
    let archs: Vec<&str> = seen
        .images
        .iter()
        .map(|i| i.platform.arch.as_str())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
}

/// Each SBOM is CycloneDX describing its package, and lists what that platform compiles: the
/// Windows plugin's includes windows-sys, the Linux ones do not; the operator's include the S3
/// client.
#[test]
fn release_sboms_list_the_dependencies() {
    let dir = release_dir();
    let read = |name: String| -> serde_json::Value {
        let path = dir.join(&name);
        serde_json::from_slice(&std::fs::read(&path).expect(&name)).expect("json")
    };
    let names = |doc: &serde_json::Value| -> Vec<String> {
        doc["components"]
            .as_array()
            .expect("components")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_owned())
            .collect()
    };
    for (os, arch, _) in PLUGIN_PLATFORMS {
        let doc = read(format!("kubectl-aexec_v{}_{os}_{arch}.cdx.json", version()));
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.5");
        assert_eq!(doc["metadata"]["component"]["name"], "kubectl-aexec");
        assert_eq!(doc["metadata"]["component"]["version"], version());
        let deps = names(&doc);
        for d in ["kube-client", "tokio", "rustls", "clap"] {
            assert!(deps.iter().any(|n| n == d), "{os}/{arch}: {d} in {deps:?}");
        }
        let windows_only = deps.iter().any(|n| n == "windows-sys");
        assert_eq!(windows_only, os == "windows", "{os}/{arch}: windows-sys");
        assert!(
            !deps.iter().any(|n| n == "aws-sdk-s3"),
            "the plugin has no S3 client"
        );
    }
    for arch in ["amd64", "arm64"] {
        let doc = read(format!(
            "aexec-operator_v{}_linux_{arch}.cdx.json",
            version()
        ));
        assert_eq!(doc["metadata"]["component"]["name"], "aexec-operator");
        let deps = names(&doc);
        for d in ["aws-sdk-s3", "kube-client", "zstd"] {
            assert!(deps.iter().any(|n| n == d), "operator {arch}: {d}");
        }
    }
}
