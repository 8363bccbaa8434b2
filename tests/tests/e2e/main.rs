//! End-to-end tests on the local control plane (real etcd, kube-apiserver, kwok, MinIO).
//!
//! One binary, so one control plane per run: tests share it and each works in a namespace of
//! its own. Run through `./dev test` (or `aexec-testenv run -- cargo test ...`), which puts the
//! run inside a private network namespace.

mod broker;
mod chart;
mod common;
mod console;
mod edges;
mod evidence;
mod ground;
mod moderation;
mod notify;
mod operator;
mod plugin;
mod pty;
mod storage;
mod transfer;
mod watch;
