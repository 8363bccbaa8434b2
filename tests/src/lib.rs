//! The local control plane for tests and the demo: etcd, kube-apiserver, kwok (the node) and
//! MinIO (S3), built from their Go modules by `tests/upstream/build.sh`, started as child
//! processes inside a private network namespace (see [`netns`]), with users as client
//! certificates.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use aexec_testenv::{TestEnv, User};
//! let env = TestEnv::shared();                   // started once per process
//! let admin = env.client(User::Admin).await?;    // a kube Client per user
//! let target = env.target(&admin).await?;        // a fresh namespace with a running pod
//! # Ok(()) }
//! ```

pub mod netns;
pub mod pki;
pub mod process;
pub mod upstream;

pub mod chart;
pub mod cluster;
pub mod env;
pub mod host;
pub mod images;
pub mod node;
pub mod operator;
pub mod sandbox;

pub use env::{NodeKind, S3, Target, TestEnv, User, apply, apply_file, client_from, install_crds};
