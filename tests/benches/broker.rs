//! Benchmarks on the local control plane: a session brokered and recorded by the operator
//! against plain exec to the same pod through the same API server, measured side by side in one
//! run. Figures are printed, never asserted. Run with `./dev bench` (it wraps this binary in
//! `aexec-testenv run`); `AEXEC_BENCH_QUICK=1` shrinks sizes and repeats for a smoke run, and
//! `AEXEC_BENCH_ONLY=out,cpu,in,latency,ttfb,approval,footprint,scale,cp,search,recorder` (any of them) picks
//! sections; `AEXEC_BENCH_KINDS=nul,random,text` (any of them) picks the kinds of output the `cpu`
//! section streams (to profile one: `./dev flamegraph cpu`); `AEXEC_BENCH_CHARTS=DIR` has the
//! scale section draw `DIR/scale.svg`.
//!
//! Both sides use the same client code path where it matters: the plain side is kube-rs's exec
//! (a v5 WebSocket to `pods/exec`), the aexec side a v5 WebSocket to `execsessions/attach`,
//! both read by the same frame loop. `kubectl exec` is timed too, for scale.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aexec_crds::{ExecPolicy, ExecSession, Phase};
use aexec_testenv::{Target, TestEnv, User};
use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
    runtime::wait::await_condition,
};
use serde_json::json;
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

#[path = "broker/chart.rs"]
mod chart;

struct Bench {
    env: &'static TestEnv,
    admin: Client,
    alice: Client,
    t: Target,
    n: u32,
    quick: bool,
}

fn main() -> Result<()> {
    // `./dev bench` sets AEXEC_TEST_SPOOL_MAX_BYTES: the benchmarks move hundreds of MiB, and
    // a burst the uploader has not caught up with must not fail closed.
    let quick = std::env::var_os("AEXEC_BENCH_QUICK").is_some();
    let env = TestEnv::shared();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(env, quick))
}

async fn run(env: &'static TestEnv, quick: bool) -> Result<()> {
    let _op = env.operator().await?;
    let admin = env.client(User::Admin).await?;
    let alice = env.client(User::Alice).await?;
    let t = env.target(&admin).await?;
    policy(
        &admin,
        &t,
        json!({"decision": "AutoApprove",
               "limits": {"maxDuration": "2h", "idleTimeout": "1h", "recordingRequired": true,
                          "allowCopy": "Both"}}),
    )
    .await?;
    let mut b = Bench {
        env,
        admin,
        alice,
        t,
        n: 0,
        quick,
    };
    println!(
        "# kubectl-aexec benchmarks (medians; aexec = brokered by the operator, recording to MinIO on)"
    );
    println!("machine: {}", machine());
    // AEXEC_BENCH_ONLY=cpu,footprint runs those sections alone (names as below).
    let only = std::env::var("AEXEC_BENCH_ONLY").unwrap_or_default();
    let run = |s: &str| only.is_empty() || only.split(',').any(|o| o.trim() == s);
    if run("out") {
        b.throughput_out().await?;
    }
    if run("cpu") {
        b.cpu_per_component().await?;
    }
    if run("watchers") {
        b.watchers().await?;
    }
    if run("in") {
        b.throughput_in().await?;
    }
    if run("latency") {
        b.latency().await?;
    }
    if run("ttfb") {
        b.time_to_first_byte().await?;
    }
    if run("approval") {
        b.approval_to_attach().await?;
    }
    if run("footprint") {
        b.footprint().await?;
    }
    if run("scale") {
        b.scale().await?;
    }
    if run("cp") {
        b.copy().await?;
    }
    if run("search") {
        b.search().await?;
    }
    if run("recorder") {
        recorder_alone(quick).await?;
    }
    Ok(())
}

/// The recorder alone, in this process (recorder, spool, upload to a local store): CPU per MiB
/// of output for the three kinds of output, medians of 3, beside its floor: the cast, zstd and
/// SHA-256 each timed alone on the same bytes. No cluster is involved, so two builds of the
/// operator can be compared side by side on the same machine (`AEXEC_BENCH_ONLY=recorder`).
async fn recorder_alone(quick: bool) -> Result<()> {
    let mib: usize = if quick { 8 } else { 64 };
    let mut random = vec![0u8; mib << 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
    let kinds = [
        ("NUL bytes", vec![0u8; mib << 20]),
        ("random bytes", random),
        ("terminal text", terminal_text((mib as u64) << 20)),
    ];
    println!(
        "\n## recorder alone: in-process, local store, {mib} MiB in 32 KiB frames, medians of 3"
    );
    for (kind, bytes) in &kinds {
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(recorder_cpu_per_mib(bytes).await?);
        }
        let mut floor = Vec::new();
        for _ in 0..3 {
            floor.push(recording_floor(bytes)?);
        }
        let part = |i: usize| median(floor.iter().map(|f| f[i]).collect());
        let (cast, zstd, sha) = (part(0), part(1), part(2));
        println!(
            "  {kind}: {:.2} ms of CPU per MiB; its floor, the work every recording does, each \
             part alone on the same bytes: {:.2} = the cast writer {cast:.2} + zstd {zstd:.2} + \
             SHA-256 {sha:.2}",
            median(runs),
            cast + zstd + sha
        );
    }
    Ok(())
}

/// The CPU per MiB of `stream` (in 32 KiB frames) of each thing a recording cannot do
/// without, each timed alone in this process, in milliseconds: writing the cast, compressing
/// it at the operator's level in segments of the operator's size, and hashing what is stored.
/// Their sum is what recording costs before any I/O: the floor under the recorder's figure.
fn recording_floor(stream: &[u8]) -> Result<[f64; 3]> {
    use aexec_operator::record::segment_file::{ZSTD_LEVEL, segment_bytes};
    use aexec_operator::recording::cast::{CastWriter, Header, SessionFacts, Stream};
    use sha2::Digest;
    let mib = stream.len() as f64 / f64::from(1u32 << 20);
    let mut cast = Vec::with_capacity(stream.len() * 2);
    let cast_secs = cpu_per_pass(|| {
        cast.clear();
        let (mut writer, _) = CastWriter::new(&Header::new(SessionFacts::default(), 0, None));
        for (i, frame) in stream.chunks(32 << 10).enumerate() {
            writer.data_event(
                Duration::from_millis(i as u64),
                Stream::Out,
                frame,
                &mut cast,
            );
        }
        Ok(())
    })?;
    let mut zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    let mut segments = Vec::new();
    let zstd_secs = cpu_per_pass(|| {
        segments = cast
            .chunks(segment_bytes(1 << 30))
            .map(|segment| zstd.compress(segment))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(())
    })?;
    let sha_secs = cpu_per_pass(|| {
        for segment in &segments {
            std::hint::black_box(sha2::Sha256::digest(segment));
        }
        Ok(())
    })?;
    Ok([cast_secs, zstd_secs, sha_secs].map(|s| s / mib * 1000.0))
}

/// This process's CPU seconds per call of `pass`, called until half a second of CPU has gone
/// (at least once), so that `/proc`'s 10 ms clock is a small part of a short pass.
fn cpu_per_pass(mut pass: impl FnMut() -> Result<()>) -> Result<f64> {
    let cpu = || self_cpu().context("reading this process's CPU time");
    let start = cpu()?;
    let mut passes = 0u32;
    loop {
        pass()?;
        passes += 1;
        let spent = cpu()? - start;
        if spent >= 0.5 {
            return Ok(spent / f64::from(passes));
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

async fn policy(admin: &Client, t: &Target, spec: serde_json::Value) -> Result<()> {
    let mut spec = spec;
    spec["namespaceSelector"] =
        json!({"matchLabels": {"kubernetes.io/metadata.name": t.namespace}});
    let p: ExecPolicy = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecPolicy",
        "metadata": {"name": format!("{}-bench", t.namespace)}, "spec": spec
    }))?;
    Api::<ExecPolicy>::all(admin.clone())
        .create(&PostParams::default(), &p)
        .await?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// What a frame loop saw: stdout bytes, and when the first one came.
struct Drained {
    bytes: u64,
    first: Option<Instant>,
}

/// Reads frames until the status frame (channel 3).
async fn drain(ws: &mut Ws) -> Result<Drained> {
    let mut d = Drained {
        bytes: 0,
        first: None,
    };
    while let Some(m) = ws.next().await {
        if let Message::Binary(b) = m? {
            match b.first() {
                Some(1) | Some(2) => {
                    d.first.get_or_insert_with(Instant::now);
                    d.bytes += b.len() as u64 - 1;
                }
                Some(3) => return Ok(d),
                _ => {}
            }
        }
    }
    bail!("the stream ended without a status")
}

fn query(cmd: &[&str], stdin: bool, tty: bool) -> String {
    let mut q: Vec<String> = vec!["stdout=true".into()];
    if !tty {
        q.push("stderr=true".into());
    }
    if stdin {
        q.push("stdin=true".into());
    }
    if tty {
        q.push("tty=true".into());
    }
    for c in cmd {
        q.push(format!("command={}", url_escape(c)));
    }
    q.join("&")
}

fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn connect(client: &Client, path: String) -> Result<Ws> {
    let req = http::Request::get(path).body(Vec::new())?;
    Ok(client.connect(req).await?.into_stream())
}

impl Bench {
    /// Plain exec to the pod, as admin: a v5 WebSocket to pods/exec.
    async fn plain(&self, cmd: &[&str], stdin: bool, tty: bool) -> Result<Ws> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/exec?container={}&{}",
            self.t.namespace,
            self.t.pod,
            self.t.container,
            query(cmd, stdin, tty)
        );
        connect(&self.admin, path).await
    }

    /// An approved session for `cmd`, created as alice (auto-approved by the bench policy).
    async fn session(&mut self, cmd: &[&str], stdin: bool, tty: bool) -> Result<String> {
        self.n += 1;
        let name = format!("b{}", self.n);
        self.request(&name, cmd, stdin, tty).await?;
        wait_phase(&self.admin, &self.t.namespace, &name, Phase::Approved).await?;
        Ok(name)
    }

    async fn request(&self, name: &str, cmd: &[&str], stdin: bool, tty: bool) -> Result<()> {
        request(&self.alice, &self.t, name, cmd, stdin, tty).await
    }

    async fn attach(&self, name: &str) -> Result<Ws> {
        attach(&self.alice, &self.t.namespace, name).await
    }

    fn repeats(&self, full: usize) -> usize {
        if self.quick { 1 } else { full }
    }

    async fn throughput_out(&mut self) -> Result<()> {
        let mib: u64 = if self.quick { 16 } else { 256 };
        let cmd_s = format!("head -c {} /dev/zero", mib << 20);
        let cmd = ["sh", "-c", cmd_s.as_str()];
        let (mut plain, mut aexec, mut kubectl) = (Vec::new(), Vec::new(), Vec::new());
        let mut cpu = Vec::new();
        for _ in 0..self.repeats(3) {
            let start = Instant::now();
            let mut ws = self.plain(&cmd, false, false).await?;
            let d = drain(&mut ws).await?;
            check_bytes(d.bytes, mib)?;
            plain.push(mib as f64 / start.elapsed().as_secs_f64());

            let name = self.session(&cmd, false, false).await?;
            let cpu0 = operator_cpu(self.env).await;
            let start = Instant::now();
            let mut ws = self.attach(&name).await?;
            let d = drain(&mut ws).await?;
            let secs = start.elapsed().as_secs_f64();
            check_bytes(d.bytes, mib)?;
            aexec.push(mib as f64 / secs);
            if let (Some(a), Some(b)) = (cpu0, operator_cpu(self.env).await) {
                cpu.push((b - a) / mib as f64 * 1000.0);
            }

            let start = Instant::now();
            let out = self.kubectl(&cmd, None).await?;
            check_bytes(out, mib)?;
            kubectl.push(mib as f64 / start.elapsed().as_secs_f64());
        }
        let (p, a) = (median(plain), median(aexec));
        println!(
            "throughput out ({mib} MiB): plain {p:.1} MiB/s, aexec {a:.1} MiB/s, ratio {:.2}x (target >= 0.5x, #18: the stream crosses the API server twice on the same 2 cores); kubectl exec {:.1} MiB/s",
            a / p,
            median(kubectl)
        );
        if !cpu.is_empty() {
            let total = median(cpu);
            println!("operator CPU per MiB relayed and recorded: {total:.2} ms");
            // The operator has no unrecorded mode (by design), so the recording's share is
            // measured apart: the same recorder and spool, in this process, on the same bytes
            // in the same frames, uploaded to a local store. The relay alone is the rest.
            let rec = recorder_cpu_per_mib(&vec![0u8; (mib as usize) << 20]).await?;
            let relay = (total - rec).max(f64::EPSILON);
            println!(
                "  of which recording (recorder, spool, upload; measured in-process): {rec:.2} ms; \
                 relay alone {relay:.2} ms; relayed and recorded / relay alone {:.2}x (target <= 1.5x, stretch 1.2x)",
                total / relay
            );
        }
        Ok(())
    }

    /// CPU per MiB of output spent by every process on the path, for plain exec and for aexec
    /// (relayed and recorded, the upload to MinIO included), medians of interleaved repeats, for
    /// three kinds of output: NUL bytes, random bytes and terminal text (a log with ANSI colours
    /// and UTF-8, lines of 40 to 200 bytes). The operator is judged against the API server's
    /// plain hop, which does the same job (TLS, WebSocket framing, proxying).
    async fn cpu_per_component(&mut self) -> Result<()> {
        let scale = if self.quick { 16 } else { 1 };
        let text = self.env.dir.join("bench-terminal-text.log");
        let text_mib = 64 / scale;
        std::fs::write(&text, terminal_text(text_mib << 20))?;
        let kinds = [
            (
                "NUL bytes",
                256 / scale,
                format!("head -c {} /dev/zero", (256 / scale) << 20),
            ),
            (
                "random bytes",
                128 / scale,
                format!("head -c {} /dev/urandom", (128 / scale) << 20),
            ),
            ("terminal text", text_mib, format!("cat {}", text.display())),
        ];
        let picked = std::env::var("AEXEC_BENCH_KINDS").unwrap_or_default();
        let kinds: Vec<_> = kinds
            .into_iter()
            .zip(["nul", "random", "text"])
            .filter(|(_, short)| picked.is_empty() || picked.split(',').any(|k| k.trim() == *short))
            .map(|(kind, _)| kind)
            .collect();
        if kinds.is_empty() {
            bail!("AEXEC_BENCH_KINDS={picked:?} picks none of nul, random, text");
        }
        let pids = self.env.component_pids();
        let found: Vec<&str> = pids.iter().map(|(n, _)| *n).collect();
        for want in COMPONENTS.iter().filter(|c| **c != "client") {
            if !found.contains(want) {
                bail!("no process of {want} found among this run's ({found:?})");
            }
        }
        println!(
            "\nCPU per MiB of output by process (ms; medians of {} interleaved runs; aexec includes the upload to MinIO)",
            self.repeats(3)
        );
        println!(
            "| run | {} | total | MiB/s | stored / output |",
            COMPONENTS.join(" | ")
        );
        println!("|---|{}---|---|---|", "---|".repeat(COMPONENTS.len()));
        let mut short = Shortfalls::default();
        for (kind, mib, cmd_s) in &kinds {
            let cmd = ["sh", "-c", cmd_s.as_str()];
            let (mut plain, mut aexec) = (Runs::default(), Runs::default());
            for _ in 0..self.repeats(3) {
                let before = cpu_now(&pids);
                let start = Instant::now();
                let mut ws = self.plain(&cmd, false, false).await?;
                let d = drain(&mut ws).await?;
                let secs = start.elapsed().as_secs_f64();
                short.check(&format!("plain exec, {kind}"), d.bytes, *mib);
                plain.push(&before, &cpu_now(&pids), *mib, secs, None);

                let name = self.session(&cmd, false, false).await?;
                let before = cpu_now(&pids);
                let start = Instant::now();
                let mut ws = self.attach(&name).await?;
                let d = drain(&mut ws).await?;
                let secs = start.elapsed().as_secs_f64();
                let mut after = cpu_now(&pids);
                short.check(&format!("aexec {name}, {kind}"), d.bytes, *mib);
                // The operator and MinIO until the recording is sealed and every segment has
                // left the spool for MinIO; the others (whose CPU the polling below would add
                // to) at the end of the stream.
                wait_phase(&self.admin, &self.t.namespace, &name, Phase::Succeeded).await?;
                let stored = stored_bytes(&self.admin, &self.t.namespace, &name).await?;
                wait_spool_empty(self.env).await?;
                let uploaded = cpu_now(&pids);
                for c in ["aexec-operator", "minio"] {
                    if let Some(v) = uploaded.get(c) {
                        after.insert(c, *v);
                    }
                }
                aexec.push(&before, &after, *mib, secs, Some(stored));
            }
            let p = plain.row(&format!("plain exec, {mib} MiB of {kind}"), false);
            let a = aexec.row(&format!("aexec, {mib} MiB of {kind}"), true);
            let op = a.get("aexec-operator").copied().unwrap_or_default();
            let api_plain = p.get("kube-apiserver").copied().unwrap_or(f64::NAN);
            let api_aexec = a.get("kube-apiserver").copied().unwrap_or(f64::NAN);
            println!(
                "  {kind}: operator / the API server's plain hop {:.2}x (target <= 1.0x); the API server's second crossing {:.2}x its plain cost",
                op / api_plain,
                api_aexec / api_plain
            );
            // The recording's share, in this process on the same kind of bytes (the operator has
            // no unrecorded mode to compare with: see throughput_out).
            let same: Vec<u8> = match *kind {
                "NUL bytes" => vec![0u8; (*mib as usize) << 20],
                "random bytes" => {
                    let mut v = vec![0u8; (*mib as usize) << 20];
                    rand::RngCore::fill_bytes(&mut rand::rng(), &mut v);
                    v
                }
                _ => std::fs::read(&text)?,
            };
            let rec = recorder_cpu_per_mib(&same).await?;
            if rec < op {
                let relay = op - rec;
                println!(
                    "  {kind}: recording {rec:.2} ms/MiB (in-process, local store), relay alone {relay:.2}; relayed and recorded / relay alone {:.2}x (target <= 1.5x)",
                    op / relay
                );
            } else {
                // The in-process store writes a second local copy with an fsync per object,
                // which the operator's S3 upload does not: an upper bound, too high here.
                println!(
                    "  {kind}: recording {rec:.2} ms/MiB in-process (local store: a second local copy, fsynced) is more than the operator's whole {op:.2}: no relay-alone figure from it"
                );
            }
        }
        short.print("the CPU runs");
        std::fs::remove_file(&text)?;
        Ok(())
    }

    /// The operator's CPU per MiB of a bulk stream with 0, 1 and 10 watchers (`kubectl aexec
    /// watch`) reading it as fast as they can, medians of interleaved repeats; and what the
    /// watchers missed (a watcher that falls behind is skipped ahead, by design).
    async fn watchers(&mut self) -> Result<()> {
        let mib: u64 = if self.quick { 16 } else { 128 };
        let cmd_s = format!("sleep 1; head -c {} /dev/zero", mib << 20);
        let cmd = ["sh", "-c", cmd_s.as_str()];
        let bob = self.env.client(User::Bob).await?;
        let counts = [0usize, 1, 10];
        let mut short = Shortfalls::default();
        let mut cpu: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        let mut missed: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for _ in 0..self.repeats(3) {
            for &n in &counts {
                let name = self.session(&cmd, false, false).await?;
                let mut ws = self.attach(&name).await?;
                wait_phase(&self.admin, &self.t.namespace, &name, Phase::Active).await?;
                let mut readers = Vec::new();
                for _ in 0..n {
                    let path = format!(
                        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/{name}/observe",
                        self.t.namespace
                    );
                    let mut w = connect(&bob, path).await?;
                    readers.push(tokio::spawn(async move {
                        let (mut shown, mut skipped) = (0u64, 0u64);
                        while let Some(Ok(m)) = w.next().await {
                            match m {
                                Message::Binary(b) if b.first() == Some(&1) => {
                                    shown += b.len() as u64 - 1
                                }
                                Message::Text(t) if t.contains("\"skipped\"") => {
                                    skipped += serde_json::from_str::<serde_json::Value>(&t)
                                        .ok()
                                        .and_then(|v| v["bytes"].as_u64())
                                        .unwrap_or(0)
                                }
                                _ => {}
                            }
                        }
                        (shown, skipped)
                    }));
                }
                let cpu0 = operator_cpu(self.env).await;
                let d = drain(&mut ws).await?;
                short.check(&format!("aexec {name} with {n} watcher(s)"), d.bytes, mib);
                let mut lost = 0u64;
                for r in readers {
                    let (shown, skipped) = r.await?;
                    if shown + skipped != d.bytes {
                        bail!(
                            "a watcher saw {shown} bytes and was told {skipped} were skipped, of {} the session showed",
                            d.bytes
                        );
                    }
                    lost += skipped;
                }
                if let (Some(a), Some(b)) = (cpu0, operator_cpu(self.env).await) {
                    cpu.entry(n)
                        .or_default()
                        .push((b - a) / mib as f64 * 1000.0);
                }
                missed
                    .entry(n)
                    .or_default()
                    .push(lost as f64 / n.max(1) as f64 / (mib << 20) as f64 * 100.0);
            }
        }
        let base = cpu.get(&0).cloned().map(median).unwrap_or(f64::NAN);
        println!("\nwatchers on a bulk stream ({mib} MiB of NULs; operator CPU per MiB, medians)");
        for &n in &counts {
            let c = cpu.get(&n).cloned().map(median).unwrap_or(f64::NAN);
            let m = missed.get(&n).cloned().map(median).unwrap_or(0.0);
            if n == 0 {
                println!("  no watcher: {c:.2} ms");
            } else {
                println!(
                    "  {n} watcher(s): {c:.2} ms, {:.2} ms per watcher; each skipped {m:.1}% of the output (fell behind)",
                    (c - base) / n as f64
                );
            }
        }
        short.print("the watcher runs");
        Ok(())
    }

    async fn throughput_in(&mut self) -> Result<()> {
        let mib: u64 = if self.quick { 8 } else { 64 };
        let cmd = ["sh", "-c", "cat > /dev/null"];
        let chunk = vec![b'x'; 32 << 10];
        let send_all = async |ws: &mut Ws| -> Result<()> {
            let mut frame = Vec::with_capacity(chunk.len() + 1);
            for _ in 0..(mib << 20) / chunk.len() as u64 {
                frame.clear();
                frame.push(0);
                frame.extend_from_slice(&chunk);
                ws.send(Message::Binary(frame.clone().into())).await?;
            }
            ws.send(Message::Binary(vec![255, 0].into())).await?;
            drain(ws).await?;
            Ok(())
        };
        let (mut plain, mut aexec) = (Vec::new(), Vec::new());
        for _ in 0..self.repeats(3) {
            let start = Instant::now();
            let mut ws = self.plain(&cmd, true, false).await?;
            send_all(&mut ws).await?;
            plain.push(mib as f64 / start.elapsed().as_secs_f64());

            let name = self.session(&cmd, true, false).await?;
            let start = Instant::now();
            let mut ws = self.attach(&name).await?;
            send_all(&mut ws).await?;
            aexec.push(mib as f64 / start.elapsed().as_secs_f64());
        }
        let (p, a) = (median(plain), median(aexec));
        println!(
            "throughput in ({mib} MiB): plain {p:.1} MiB/s, aexec {a:.1} MiB/s, ratio {:.2}x (target >= 0.6x, #18)",
            a / p
        );
        Ok(())
    }

    /// Keystroke to echo in a tty running `cat`: one byte out, wait for it back.
    async fn latency(&mut self) -> Result<()> {
        let n = if self.quick { 20 } else { 300 };
        let cmd = ["cat"];
        async fn rtts(ws: &mut Ws, n: usize) -> Result<Vec<f64>> {
            let mut out = Vec::with_capacity(n);
            // Warm up: the first echo also carries the tty's setup.
            for i in 0..n + 10 {
                let start = Instant::now();
                ws.send(Message::Binary(vec![0, b'a' + (i % 26) as u8].into()))
                    .await?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) if b.first() == Some(&1) && b.len() > 1 => {
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.into()),
                        None => bail!("the tty closed"),
                    }
                }
                if i >= 10 {
                    out.push(start.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Ok(out)
        }
        let mut ws = self.plain(&cmd, true, true).await?;
        let plain = rtts(&mut ws, n).await?;
        let _ = ws.close(None).await;
        let name = self.session(&cmd, true, true).await?;
        let mut ws = self.attach(&name).await?;
        let aexec = rtts(&mut ws, n).await?;
        let _ = ws.close(None).await;
        let (p50p, p99p) = (percentile(plain.clone(), 0.5), percentile(plain, 0.99));
        let (p50a, p99a) = (percentile(aexec.clone(), 0.5), percentile(aexec, 0.99));
        println!(
            "keystroke echo ({n} keys): plain p50 {p50p:.2} ms p99 {p99p:.2} ms; aexec p50 {p50a:.2} ms p99 {p99a:.2} ms; added p50 {:+.2} ms (target <= +1), p99 {:+.2} ms (target <= +5)",
            p50a - p50p,
            p99a - p99p
        );
        Ok(())
    }

    /// `-- true`: from nothing to the exit status. aexec includes creating the session, the
    /// policy's auto-approval and the attach.
    async fn time_to_first_byte(&mut self) -> Result<()> {
        let cmd = ["true"];
        let (mut plain, mut aexec, mut kubectl) = (Vec::new(), Vec::new(), Vec::new());
        // The plugin installed as kubectl finds it: `kubectl-aexec` on PATH.
        let plugin = std::env::var_os("AEXEC_PLUGIN_BIN").map(std::path::PathBuf::from);
        let mut kubectl_aexec = Vec::new();
        // Where aexec's time goes: create, the approval seen on a watch, the attach (the
        // operator claims the session and opens the pod's stream), the command to its status.
        let mut phases: [Vec<f64>; 4] = Default::default();
        // Each session's changes as a watch on the namespace sees them (when, name, finalizer
        // set, phase): where the approval's time goes.
        type Seen = Vec<(Instant, String, bool, Phase)>;
        let seen: std::sync::Arc<std::sync::Mutex<Seen>> = Default::default();
        let log = seen.clone();
        let api: Api<ExecSession> = Api::namespaced(self.admin.clone(), &self.t.namespace);
        let watch = tokio::spawn(async move {
            let mut events = std::pin::pin!(kube::runtime::watcher(api, Default::default()));
            while let Some(Ok(ev)) = events.next().await {
                if let kube::runtime::watcher::Event::Apply(s) = ev
                    && let Ok(mut log) = log.lock()
                {
                    log.push((
                        Instant::now(),
                        s.name_any(),
                        !s.finalizers().is_empty(),
                        s.phase(),
                    ));
                }
            }
        });
        let mut steps: [Vec<f64>; 3] = Default::default();
        for _ in 0..self.repeats(15) {
            let start = Instant::now();
            let mut ws = self.plain(&cmd, false, false).await?;
            drain(&mut ws).await?;
            plain.push(start.elapsed().as_secs_f64() * 1000.0);

            self.n += 1;
            let name = format!("b{}", self.n);
            let start = Instant::now();
            self.request(&name, &cmd, false, false).await?;
            let created = start.elapsed();
            wait_phase(&self.admin, &self.t.namespace, &name, Phase::Approved).await?;
            let approved = start.elapsed();
            let mut ws = self.attach(&name).await?;
            let attached = start.elapsed();
            drain(&mut ws).await?;
            let done = start.elapsed();
            aexec.push(done.as_secs_f64() * 1000.0);
            for (i, (from, to)) in [
                (Duration::ZERO, created),
                (created, approved),
                (approved, attached),
                (attached, done),
            ]
            .into_iter()
            .enumerate()
            {
                phases[i].push((to - from).as_secs_f64() * 1000.0);
            }
            let at = |want: &dyn Fn(bool, Phase) -> bool| {
                seen.lock().ok().and_then(|log| {
                    log.iter()
                        .find(|(_, n, f, p)| *n == name && want(*f, *p))
                        .map(|(t, ..)| t.duration_since(start).as_secs_f64() * 1000.0)
                })
            };
            if let (Some(a), Some(f), Some(p)) = (
                at(&|_, _| true),
                at(&|f, _| f),
                at(&|_, p| p == Phase::Approved),
            ) {
                steps[0].push(a);
                steps[1].push(f - a);
                steps[2].push(p - f);
            }

            let start = Instant::now();
            self.kubectl(&cmd, None).await?;
            kubectl.push(start.elapsed().as_secs_f64() * 1000.0);

            if let Some(plugin) = &plugin {
                let start = Instant::now();
                self.kubectl_aexec(plugin, &cmd).await?;
                kubectl_aexec.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let (p, a) = (median(plain), median(aexec));
        println!(
            "time to exit status of `true`, API calls: plain {p:.1} ms, aexec {a:.1} ms (create + auto-approve + attach), ratio {:.2}x",
            a / p,
        );
        watch.abort();
        let [c, ap, at, run] = phases.map(median);
        println!(
            "  aexec's time: create {c:.1} ms, approval seen on a watch {ap:.1} ms, attach (claim, pod's stream opened) {at:.1} ms, command to exit status {run:.1} ms"
        );
        if steps.iter().all(|v| !v.is_empty()) {
            let [added, finalizer, approved] = steps.map(median);
            println!(
                "  the approval, on a watch of the namespace: the session seen {added:.1} ms after the create began, its finalizer {finalizer:.1} ms later, Approved {approved:.1} ms after that"
            );
        }
        let k = median(kubectl);
        if kubectl_aexec.is_empty() {
            println!(
                "time to exit status of `true`, as a user runs them: kubectl exec {k:.1} ms; kubectl aexec not timed (AEXEC_PLUGIN_BIN is not set; ./dev bench sets it)"
            );
        } else {
            let ka = median(kubectl_aexec);
            println!(
                "time to exit status of `true`, as a user runs them (whole processes): kubectl exec {k:.1} ms, kubectl aexec {ka:.1} ms, ratio {:.2}x (target <= 1.5x)",
                ka / k
            );
        }
        Ok(())
    }

    /// `kubectl aexec -n NS POD -- CMD` as a user runs it: kubectl finds the plugin on `PATH`
    /// (`plugin` is the binary's path) and runs it; waits for the exit status.
    async fn kubectl_aexec(&self, plugin: &std::path::Path, cmd: &[&str]) -> Result<()> {
        let dir = plugin.parent().context("the plugin's directory")?;
        let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))?;
        let status = tokio::process::Command::new(&self.env.upstream.kubectl)
            .env("PATH", path)
            .env("KUBECONFIG", self.env.kubeconfig(User::Admin))
            .args(["aexec", "-n", &self.t.namespace, &self.t.pod, "--"])
            .args(cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await?;
        if !status.success() {
            bail!("kubectl aexec {} ended with {status}", cmd.join(" "));
        }
        Ok(())
    }

    /// From bob's approve to alice's first output byte, alice waiting on a watch.
    async fn approval_to_attach(&mut self) -> Result<()> {
        let t = self.env.target(&self.admin).await?;
        policy(
            &self.admin,
            &t,
            json!({"decision": "RequireApproval", "approval": {"required": 1, "groups": ["sre"]}}),
        )
        .await?;
        let bob = self.env.client(User::Bob).await?;
        let mut samples = Vec::new();
        for i in 0..self.repeats(10) {
            let name = format!("a{i}");
            request(&self.alice, &t, &name, &["echo", "x"], false, false).await?;
            wait_phase(&self.admin, &t.namespace, &name, Phase::Pending).await?;
            let (alice, ns, n2) = (self.alice.clone(), t.namespace.clone(), name.clone());
            let waiter = tokio::spawn(async move {
                wait_phase(&alice, &ns, &n2, Phase::Approved).await?;
                let mut ws = attach(&alice, &ns, &n2).await?;
                let d = drain(&mut ws).await?;
                d.first.context("no output")
            });
            // Let alice's watch start before the approval.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let start = Instant::now();
            let req = http::Request::put(format!(
                "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/{name}/approve",
                t.namespace
            ))
            .header("content-type", "application/json")
            .body(br#"{"comment":"bench"}"#.to_vec())?;
            bob.request_text(req).await?;
            let first = waiter.await??;
            samples.push(first.duration_since(start).as_secs_f64() * 1000.0);
        }
        println!(
            "approval to first byte: p50 {:.1} ms (target < 200 ms, watch-driven)",
            median(samples)
        );
        Ok(())
    }

    /// Operator RSS with idle attached sessions (`cat` waiting for input).
    async fn footprint(&mut self) -> Result<()> {
        let counts: &[usize] = if self.quick {
            &[1, 20]
        } else {
            &[1, 100, 1000]
        };
        fresh_operator(self.env).await?;
        let base = operator_rss_kib(self.env).await.context("operator RSS")?;
        println!("operator RSS, no session attached: {} KiB", base);
        let mut held: Vec<Ws> = Vec::new();
        for &n in counts {
            self.hold_idle(&mut held, n).await?;
            let rss = operator_rss_kib(self.env).await.context("operator RSS")?;
            println!(
                "operator RSS with {n} idle sessions: {rss} KiB, {:.1} KiB per session above the idle operator (target <= 64 KiB at 1,000)",
                rss.saturating_sub(base) as f64 / n as f64
            );
        }
        for mut ws in held {
            let _ = ws.send(Message::Binary(vec![255, 0].into())).await;
            let _ = ws.close(None).await;
        }
        Ok(())
    }

    /// Attaches sessions running `cat` until `held` has `n`, then lets them settle (2 s).
    async fn hold_idle(&mut self, held: &mut Vec<Ws>, n: usize) -> Result<()> {
        while held.len() < n {
            let name = self.session(&["cat"], true, false).await?;
            held.push(self.attach(&name).await?);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }

    /// How the operator's cost grows: its CPU and RSS with 1, 10, 100 and 1,000 sessions
    /// attached, idle and then busy (each session echoes `KEY` bytes every `BEAT`: a person
    /// typing into a shell that answers), and the aggregate throughput of 1, 4 and 16 bulk
    /// streams at once, plain exec against aexec. Printed as tables, and drawn into
    /// `$AEXEC_BENCH_CHARTS/scale.svg` when that is set (`./dev bench` sets it to docs/).
    async fn scale(&mut self) -> Result<()> {
        const KEY: usize = 1024;
        const BEAT: Duration = Duration::from_millis(100);
        let counts: &[usize] = if self.quick {
            &[1, 10]
        } else {
            &[1, 10, 100, 1000]
        };
        let busy_for = if self.quick {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        };
        fresh_operator(self.env).await?;
        let base = operator_rss_kib(self.env).await.context("operator RSS")?;
        println!(
            "\nHow cost grows with sessions (operator; idle: attached `cat`, nothing typed; busy: each session echoes {KEY} bytes every {} ms)",
            BEAT.as_millis()
        );
        println!("operator RSS with no session: {base} KiB");
        println!(
            "| sessions | idle RSS / session | idle CPU | busy RSS / session | busy CPU | busy echo, all sessions | echo p99 |"
        );
        println!("|---|---|---|---|---|---|---|");
        let mut rows = Vec::new();
        let mut held: Vec<Ws> = Vec::new();
        for &n in counts {
            self.hold_idle(&mut held, n).await?;
            let idle_rss = operator_rss_kib(self.env).await.context("operator RSS")?;
            let (c0, t0) = (operator_cpu(self.env).await, Instant::now());
            tokio::time::sleep(Duration::from_secs(5)).await;
            let idle_cpu = cpu_share(c0, operator_cpu(self.env).await, t0);
            // Busy: every session types and reads its echo, on the same beat.
            let (c0, t0) = (operator_cpu(self.env).await, Instant::now());
            let tasks: Vec<_> = held
                .drain(..)
                .map(|ws| tokio::spawn(echo_for(ws, KEY, BEAT, busy_for)))
                .collect();
            let mut peak = 0u64;
            while !tasks.iter().all(|t| t.is_finished()) {
                if let Some(r) = operator_rss_kib(self.env).await {
                    peak = peak.max(r);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let busy_cpu = cpu_share(c0, operator_cpu(self.env).await, t0);
            let secs = t0.elapsed().as_secs_f64();
            let (mut echoed, mut waits) = (0u64, Vec::new());
            for t in tasks {
                let (ws, bytes, w) = t.await??;
                echoed += bytes;
                waits.extend(w);
                held.push(ws);
            }
            let row = chart::ScaleRow {
                sessions: n,
                idle_rss_kib: idle_rss.saturating_sub(base) as f64 / n as f64,
                idle_cpu,
                busy_rss_kib: peak.saturating_sub(base) as f64 / n as f64,
                busy_cpu,
                echo_kib_s: echoed as f64 / 1024.0 / secs,
            };
            println!(
                "| {n} | {:.1} KiB | {:.1}% | {:.1} KiB | {:.1}% | {:.0} KiB/s (asked {:.0}) | {:.1} ms |",
                row.idle_rss_kib,
                row.idle_cpu,
                row.busy_rss_kib,
                row.busy_cpu,
                row.echo_kib_s,
                (n * KEY) as f64 / 1024.0 / BEAT.as_secs_f64(),
                if waits.is_empty() {
                    f64::NAN
                } else {
                    percentile(waits, 0.99)
                },
            );
            rows.push(row);
        }
        for mut ws in held {
            let _ = ws.send(Message::Binary(vec![255, 0].into())).await;
            let _ = ws.close(None).await;
        }
        println!(
            "  CPU is the operator's share of one core (100% = one core of {}); RSS above the operator with no session",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );

        // Bulk streams at once: the same bytes in all, split among the streams.
        settle(self.env).await;
        let total: u64 = if self.quick { 32 } else { 256 };
        println!(
            "\nConcurrent bulk streams ({total} MiB of NULs in all, split evenly; medians of 3)"
        );
        println!("| streams | plain exec MiB/s | aexec MiB/s | aexec / plain | operator ms/MiB |");
        println!("|---|---|---|---|---|");
        let mut streams = Vec::new();
        let mut short = Shortfalls::default();
        for k in [1usize, 4, 16] {
            let each = total / k as u64;
            let cmd_s = format!("head -c {} /dev/zero", each << 20);
            let cmd = ["sh", "-c", cmd_s.as_str()];
            let (mut plain, mut aexec, mut op) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..self.repeats(3) {
                let start = Instant::now();
                let mut socks = Vec::new();
                for _ in 0..k {
                    socks.push(self.plain(&cmd, false, false).await?);
                }
                for d in futures::future::try_join_all(socks.iter_mut().map(drain)).await? {
                    short.check(&format!("plain exec, {k} streams"), d.bytes, each);
                }
                plain.push(total as f64 / start.elapsed().as_secs_f64());

                let mut names = Vec::new();
                for _ in 0..k {
                    names.push(self.session(&cmd, false, false).await?);
                }
                let c0 = operator_cpu(self.env).await;
                let start = Instant::now();
                let mut socks = Vec::new();
                for name in &names {
                    socks.push(self.attach(name).await?);
                }
                for d in futures::future::try_join_all(socks.iter_mut().map(drain)).await? {
                    short.check(&format!("aexec, {k} streams"), d.bytes, each);
                }
                aexec.push(total as f64 / start.elapsed().as_secs_f64());
                for name in &names {
                    wait_phase(&self.admin, &self.t.namespace, name, Phase::Succeeded).await?;
                }
                wait_spool_empty(self.env).await?;
                if let (Some(a), Some(b)) = (c0, operator_cpu(self.env).await) {
                    op.push((b - a) * 1000.0 / total as f64);
                }
            }
            let row = chart::StreamsRow {
                streams: k,
                plain_mib_s: median(plain),
                aexec_mib_s: median(aexec),
                operator_ms_per_mib: if op.is_empty() { f64::NAN } else { median(op) },
            };
            println!(
                "| {k} | {:.0} | {:.0} | {:.2}x | {:.2} |",
                row.plain_mib_s,
                row.aexec_mib_s,
                row.aexec_mib_s / row.plain_mib_s,
                row.operator_ms_per_mib
            );
            streams.push(row);
        }
        short.print("the concurrent streams");
        if let Some(dir) = std::env::var_os("AEXEC_BENCH_CHARTS") {
            let path = std::path::Path::new(&dir).join("scale.svg");
            chart::scale(&path, &rows, &streams, &machine())?;
            println!("drawn: {}", path.display());
        }
        Ok(())
    }

    /// `kubectl aexec cp` (recorded: the tar stream and its file list stored with the session)
    /// against `kubectl cp`, both ways, on one file of random bytes (so that compression saves
    /// nothing), timed as whole processes: medians of interleaved repeats.
    async fn copy(&mut self) -> Result<()> {
        let mib: u64 = if self.quick { 16 } else { 256 };
        let plugin = std::env::var_os("AEXEC_PLUGIN_BIN")
            .map(std::path::PathBuf::from)
            .context("AEXEC_PLUGIN_BIN: the plugin to time (./dev bench sets it)")?;
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("src.bin");
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut block = vec![0u8; 1 << 20];
            for _ in 0..mib {
                for b in block.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
                }
                f.write_all(&block)?;
            }
        }
        let src_s = src.to_str().context("path")?;
        let ns = self.t.namespace.clone();
        let remote = |p: &std::path::Path| format!("{ns}/{}:{}", self.t.pod, p.display());
        let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for i in 0..self.repeats(3) {
            let down_k = dir.path().join(format!("down-k-{i}"));
            let down_a = dir.path().join(format!("down-a-{i}"));
            let up_k = dir.path().join(format!("up-k-{i}"));
            let up_a = dir.path().join(format!("up-a-{i}"));
            let runs: [(&str, bool, Vec<String>); 4] = [
                (
                    "download kubectl cp",
                    false,
                    vec![remote(&src), down_k.display().to_string()],
                ),
                (
                    "download aexec cp",
                    true,
                    vec![remote(&src), down_a.display().to_string()],
                ),
                (
                    "upload kubectl cp",
                    false,
                    vec![src_s.to_owned(), remote(&up_k)],
                ),
                (
                    "upload aexec cp",
                    true,
                    vec![src_s.to_owned(), remote(&up_a)],
                ),
            ];
            for (label, aexec, args) in runs {
                let start = Instant::now();
                self.kubectl_cp(&plugin, aexec, &args).await?;
                times
                    .entry(label)
                    .or_default()
                    .push(start.elapsed().as_secs_f64());
            }
            for out in [&down_k, &down_a, &up_k, &up_a] {
                let len = std::fs::metadata(out)?.len();
                if len != mib << 20 {
                    bail!("{} holds {len} bytes, not {} MiB", out.display(), mib);
                }
                std::fs::remove_file(out)?;
            }
        }
        println!(
            "\n## cp: {mib} MiB of random bytes, whole processes (kubectl aexec cp records the tar stream)"
        );
        println!("| direction | kubectl cp MiB/s | kubectl aexec cp MiB/s | aexec / kubectl |");
        println!("|---|---|---|---|");
        for dir in ["download", "upload"] {
            let k = mib as f64 / median(times[format!("{dir} kubectl cp").as_str()].clone());
            let a = mib as f64 / median(times[format!("{dir} aexec cp").as_str()].clone());
            println!("| {dir} | {k:.1} | {a:.1} | {:.2}x |", a / k);
        }
        Ok(())
    }

    /// `kubectl aexec search`'s scan rate: MiB of recordings read and matched per second, beside
    /// `export` of the same recording (read and verified by the operator, not matched), whole
    /// processes as admin.
    async fn search(&mut self) -> Result<()> {
        let mib: u64 = if self.quick { 8 } else { 64 };
        let plugin = std::env::var_os("AEXEC_PLUGIN_BIN")
            .map(std::path::PathBuf::from)
            .context("AEXEC_PLUGIN_BIN: the plugin to time (./dev bench sets it)")?;
        let ns = self.t.namespace.clone();
        // Only the session made here is searched (the namespace holds the other sections').
        let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // A log with colours and UTF-8, lines of 60-140 bytes.
        let lines = (mib << 20) / 100;
        let script = format!(
            r#"awk 'BEGIN {{ for (i = 0; i < {lines}; i++) printf "\033[32mINFO\033[0m %08d r\303\251quest id=%08x path=/api/v1/items/%d status=200 dur=%dms %s\n", i, i, i % 997, i % 89, substr("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz", 1, i % 50) }}'"#
        );
        let run = |args: Vec<String>| {
            let mut c = tokio::process::Command::new(&plugin);
            c.arg("--kubeconfig")
                .arg(self.env.kubeconfig(User::Admin))
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c
        };
        let out = run(vec![
            "-n".into(),
            ns.clone(),
            self.t.pod.clone(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            script,
        ])
        .output()
        .await?;
        if !out.status.success() {
            bail!(
                "the session for the search section failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let shown = out.stdout.len() as f64 / f64::from(1u32 << 20);
        // Its recording is sealed before the search (the status holds the chain head).
        let sessions: Api<ExecSession> = Api::namespaced(self.admin.clone(), &ns);
        let since_ts = chrono::DateTime::parse_from_rfc3339(&since)?.timestamp();
        let started = Instant::now();
        let name = loop {
            let l = sessions.list(&Default::default()).await?.items;
            let sealed: Vec<&ExecSession> = l
                .iter()
                .filter(|s| {
                    s.metadata
                        .creation_timestamp
                        .as_ref()
                        .is_some_and(|t| t.0.as_second() >= since_ts)
                        && s.status
                            .as_ref()
                            .and_then(|st| st.record.as_ref())
                            .is_some()
                })
                .collect();
            if let [s] = sealed[..] {
                break s.metadata.name.clone().context("the session's name")?;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the search section's session was not sealed within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut read_mib = 0.0;
        let search = |extra: &[&str], pattern: &str| {
            let mut a: Vec<String> = ["search", "-n", &ns, "--archived", "--since", &since]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            a.extend(extra.iter().map(|s| (*s).to_owned()));
            a.push(pattern.to_owned());
            a
        };
        for _ in 0..self.repeats(3) {
            // The retention may delete the ExecSession meanwhile: export and search --archived
            // then read its signed record from the store.
            let runs: [(&str, Vec<String>); 3] = [
                (
                    "export (read and verified)",
                    vec!["export".into(), "-n".into(), ns.clone(), name.clone()],
                ),
                ("search, typed and shown", search(&[], "id=0000abcd")),
                (
                    "search, shown only",
                    search(&["--output"], "(?i)REQU\u{c9}ST id=0000abcd"),
                ),
            ];
            for (label, args) in runs {
                let start = Instant::now();
                let out = run(args.clone()).output().await?;
                let secs = start.elapsed().as_secs_f64();
                if !out.status.success() {
                    bail!(
                        "kubectl aexec {}: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                if label.starts_with("search") {
                    // "N matches in 1 session (X MiB of recordings read)"
                    let err = String::from_utf8_lossy(&out.stderr);
                    if !err.contains("in 1 session") {
                        let hits = String::from_utf8_lossy(&out.stdout);
                        let hits: Vec<&str> = hits.lines().take(6).collect();
                        bail!(
                            "{label}: the search read another session than the section's \
                             ({name}): {err}; first lines: {hits:?}"
                        );
                    }
                    read_mib = err
                        .rsplit_once('(')
                        .and_then(|(_, r)| r.split_whitespace().next())
                        .and_then(|m| m.parse::<f64>().ok())
                        .context("the MiB read, from search's last line")?;
                } else {
                    read_mib = out.stdout.len() as f64 / f64::from(1u32 << 20);
                }
                times.entry(label).or_default().push(secs);
            }
        }
        println!(
            "\n## search: one recording of {shown:.1} MiB of coloured log lines (UTF-8, 60-140 bytes), {read_mib:.1} MiB of asciicast; whole processes"
        );
        println!("| run | seconds | MiB of recording per second |");
        println!("|---|---|---|");
        for (label, t) in &times {
            let secs = median(t.clone());
            println!("| {label} | {secs:.2} | {:.1} |", read_mib / secs);
        }
        Ok(())
    }

    /// `kubectl cp ARGS`, or `kubectl aexec cp ARGS` with the plugin found on PATH, as admin.
    async fn kubectl_cp(
        &self,
        plugin: &std::path::Path,
        aexec: bool,
        args: &[String],
    ) -> Result<()> {
        let dir = plugin.parent().context("the plugin's directory")?;
        let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))?;
        let out = tokio::process::Command::new(&self.env.upstream.kubectl)
            .env("PATH", path)
            .env("KUBECONFIG", self.env.kubeconfig(User::Admin))
            .args(if aexec {
                vec!["aexec", "cp", "-q"]
            } else {
                vec!["cp"]
            })
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "{}cp {} ended with {}: {}",
                if aexec { "kubectl aexec " } else { "kubectl " },
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `kubectl exec` as admin; returns the stdout byte count.
    async fn kubectl(&self, cmd: &[&str], stdin: Option<&[u8]>) -> Result<u64> {
        use tokio::io::AsyncReadExt;
        let mut c = tokio::process::Command::new(&self.env.upstream.kubectl);
        c.arg("--kubeconfig")
            .arg(self.env.kubeconfig(User::Admin))
            .args(["exec", "-n", &self.t.namespace, &self.t.pod])
            .args(if stdin.is_some() { vec!["-i"] } else { vec![] })
            .arg("--")
            .args(cmd)
            .stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null());
        let mut child = c.spawn()?;
        let mut out = child.stdout.take().context("stdout")?;
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            let k = out.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        child.wait().await?;
        Ok(n)
    }
}

/// Streams that ended short: the end of a stream lost between the node and the API server
/// (a race upstream: the node closes its SPDY connection right after the exit status, and data
/// still queued for a slow reader is dropped; `kubectl exec` sees it too). Counted and printed
/// rather than aborting the benchmark; any other shortfall is an error.
#[derive(Default)]
struct Shortfalls(Vec<String>);

impl Shortfalls {
    fn check(&mut self, what: &str, got: u64, mib: u64) {
        let want = mib << 20;
        if got != want {
            self.0.push(format!(
                "{what}: {got} of {want} bytes ({} short)",
                want.saturating_sub(got)
            ));
        }
    }

    fn print(&self, section: &str) {
        if self.0.is_empty() {
            println!("  every stream of {section} arrived whole");
        }
        for s in &self.0 {
            println!("  SHORT STREAM in {section}: {s}");
        }
    }
}

fn check_bytes(got: u64, mib: u64) -> Result<()> {
    if got != mib << 20 {
        bail!("expected {} bytes, got {got}", mib << 20);
    }
    Ok(())
}

async fn request(
    alice: &Client,
    t: &Target,
    name: &str,
    cmd: &[&str],
    stdin: bool,
    tty: bool,
) -> Result<()> {
    let s: ExecSession = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession", "metadata": {"name": name},
        "spec": {"pod": t.pod, "command": cmd, "stdin": stdin, "tty": tty,
                 "requester": {"username": "alice", "groups": ["dev", "system:authenticated"]}}
    }))?;
    Api::<ExecSession>::namespaced(alice.clone(), &t.namespace)
        .create(&PostParams::default(), &s)
        .await?;
    Ok(())
}

async fn attach(alice: &Client, ns: &str, name: &str) -> Result<Ws> {
    connect(
        alice,
        format!("/apis/subresources.aexec.dev/v1alpha1/namespaces/{ns}/execsessions/{name}/attach"),
    )
    .await
}

async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> Result<()> {
    let api: Api<ExecSession> = Api::namespaced(client.clone(), ns);
    let cond = move |s: Option<&ExecSession>| s.is_some_and(|s| s.phase() == phase);
    let s = tokio::time::timeout(Duration::from_secs(30), await_condition(api, name, cond))
        .await
        .with_context(|| format!("{name} not {phase} within 30s"))??;
    let _ = s.map(|s| s.name_any());
    Ok(())
}

/// The operator's resident memory, from /proc.
async fn operator_rss_kib(env: &TestEnv) -> Option<u64> {
    let pid = env.operator_pid().await?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time the operator's recorder, spool and uploader spend per MiB of `stream`
/// relayed in 32 KiB frames (as the API server sends them), in milliseconds: `mib` MiB through a
/// `Recorder` in this process, the spool in a temporary directory drained into a local store.
async fn recorder_cpu_per_mib(stream: &[u8]) -> Result<f64> {
    let mib = stream.len() as f64 / f64::from(1u32 << 20);
    use aexec_operator::{
        control::metrics::Metrics,
        record::recorder::Recorder,
        record::spool::Spool,
        record::storage::{LocalDir, Store},
        recording::cast::Event,
    };
    let dir = tempfile::tempdir()?;
    let spool = std::sync::Arc::new(
        Spool::open(
            dir.path().join("spool"),
            u64::MAX,
            Store::Local(LocalDir::new(dir.path().join("store"))),
            Metrics::default(),
        )
        .await?,
    );
    let session: ExecSession = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
        "metadata": {"name": "bench", "namespace": "bench", "uid": "u-bench"},
        "spec": {"pod": "web", "command": ["sh"], "requester": {"username": "alice"}},
        "status": {"phase": "Active", "podUID": "u-pod", "broker": "bench"}
    }))?;
    let before = self_cpu().context("reading this process's CPU time")?;
    let recorder = Recorder::start(spool.clone(), &session);
    for frame in stream.chunks(32 << 10) {
        // A copy per frame, as the relay hands the recorder its own copy.
        recorder
            .record(Event::Output(frame.to_vec()))
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let finished = recorder.finish().await;
    if let Some(why) = finished.failure {
        bail!("the in-process recording failed: {why}");
    }
    spool.drain(Duration::from_secs(600)).await?;
    let after = self_cpu().context("reading this process's CPU time")?;
    Ok((after - before) / mib * 1000.0)
}

/// The processes whose CPU the per-component table shows, in its column order ("client" is
/// this benchmark: kube-rs for plain exec, a WebSocket to the aggregated API for aexec).
const COMPONENTS: [&str; 6] = [
    "client",
    "kube-apiserver",
    "aexec-operator",
    "kwok",
    "minio",
    "etcd",
];

/// CPU seconds so far of this process and of each of `pids`, summed by component.
fn cpu_now(pids: &[(&'static str, u32)]) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    if let Some(c) = self_cpu() {
        m.insert("client", c);
    }
    for (name, pid) in pids {
        if let Some(c) = cpu_of(&format!("/proc/{pid}/stat")) {
            *m.entry(*name).or_default() += c;
        }
    }
    m
}

/// Repeated runs of one kind: CPU ms per MiB by component, MiB/s, and stored bytes per byte.
#[derive(Default)]
struct Runs {
    cpu: BTreeMap<&'static str, Vec<f64>>,
    rate: Vec<f64>,
    stored: Vec<f64>,
}

impl Runs {
    fn push(
        &mut self,
        before: &BTreeMap<&'static str, f64>,
        after: &BTreeMap<&'static str, f64>,
        mib: u64,
        secs: f64,
        stored: Option<u64>,
    ) {
        for (name, a) in after {
            let b = before.get(name).copied().unwrap_or(*a);
            self.cpu
                .entry(name)
                .or_default()
                .push((a - b) * 1000.0 / mib as f64);
        }
        self.rate.push(mib as f64 / secs);
        if let Some(s) = stored {
            self.stored.push(s as f64 / (mib << 20) as f64);
        }
    }

    /// Prints a table row and returns the medians by component. Without `aexec` (plain exec)
    /// the operator is not on the path: its column shows "-" and counts in no total.
    fn row(&self, label: &str, aexec: bool) -> BTreeMap<&'static str, f64> {
        let medians: BTreeMap<&'static str, f64> = self
            .cpu
            .iter()
            .filter(|(k, _)| aexec || **k != "aexec-operator")
            .map(|(k, v)| (*k, median(v.clone())))
            .collect();
        let cells: Vec<String> = COMPONENTS
            .iter()
            .map(|c| match medians.get(c) {
                Some(v) => format!("{v:.2}"),
                None => "-".into(),
            })
            .collect();
        let total: f64 = medians.values().sum();
        let stored = if self.stored.is_empty() {
            "-".into()
        } else {
            format!("{:.2}x", median(self.stored.clone()))
        };
        println!(
            "| {label} | {} | {total:.2} | {:.0} | {stored} |",
            cells.join(" | "),
            median(self.rate.clone())
        );
        medians
    }
}

/// The size of a session's recording in the store (`status.recording.bytes`).
async fn stored_bytes(client: &Client, ns: &str, name: &str) -> Result<u64> {
    let s = Api::<ExecSession>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    s.status
        .and_then(|st| st.recording)
        // As stored (compressed); a recording from before compression gives its cast size.
        .and_then(|r| r.stored_bytes.or(r.bytes))
        .and_then(|b| u64::try_from(b).ok())
        .with_context(|| format!("{name} has no recording size in its status"))
}

/// Waits until the operator's spool holds no file: every segment uploaded to MinIO.
async fn wait_spool_empty(env: &TestEnv) -> Result<()> {
    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { files(&p) } else { 1 }
                })
                .sum()
        })
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = files(&env.spool_dir());
        if n == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{n} files still in the operator's spool after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `bytes` of terminal text, the same every run: log lines of 40 to 200 bytes with ANSI
/// colours, timestamps, UTF-8 words and numbers, as `kubectl logs` or a build prints them.
fn terminal_text(bytes: u64) -> Vec<u8> {
    const LEVELS: [&str; 4] = [
        "\x1b[32mINFO\x1b[0m ",
        "\x1b[33mWARN\x1b[0m ",
        "\x1b[31;1mERROR\x1b[0m",
        "\x1b[2mDEBUG\x1b[0m",
    ];
    const WORDS: [&str; 16] = [
        "request",
        "served",
        "naïve",
        "café",
        "connexion",
        "überprüft",
        "日本語",
        "ログ",
        "retry",
        "pod/web-7d4f9",
        "latency",
        "→",
        "ok",
        "GET /api/v1",
        "status=200",
        "—",
    ];
    let mut out = Vec::with_capacity(bytes as usize + 256);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut line = 0u64;
    while (out.len() as u64) < bytes {
        line += 1;
        let target = 40 + (next() % 161) as usize;
        let start = out.len();
        out.extend_from_slice(
            format!(
                "2026-12-01T12:{:02}:{:02}.{:03}Z {} ",
                (line / 60_000) % 60,
                (line / 1000) % 60,
                line % 1000,
                LEVELS[(next() % 4) as usize]
            )
            .as_bytes(),
        );
        while out.len() - start < target {
            out.extend_from_slice(WORDS[(next() % 16) as usize].as_bytes());
            out.push(b' ');
            if next() % 5 == 0 {
                out.extend_from_slice(format!("{} ", next() % 100_000).as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.truncate(bytes as usize);
    out
}

/// This process's CPU time so far (user + system), in seconds.
fn self_cpu() -> Option<f64> {
    cpu_of("/proc/self/stat")
}

fn cpu_of(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Restarts the operator and waits until it is quiet: memory figures start from a process
/// whose allocator holds nothing from the sections before (a heap that served 1,000 sessions
/// keeps their pages and hands them to the next ones, hiding the growth).
async fn fresh_operator(env: &TestEnv) -> Result<()> {
    settle(env).await;
    env.stop_operator().await?;
    env.ensure_operator().await?;
    settle(env).await;
    Ok(())
}

/// Waits (up to 2 minutes) until the operator is quiet: the sessions of the sections before
/// have ended, their recordings are sealed and uploaded and their records signed (its CPU below
/// 2% of a core over a second, its spool empty). Figures taken while it still finishes hundreds
/// of sessions would be theirs.
async fn settle(env: &TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let (c0, t0) = (operator_cpu(env).await, Instant::now());
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cpu_share(c0, operator_cpu(env).await, t0) < 2.0 && wait_spool_empty(env).await.is_ok() {
            return;
        }
    }
    println!("  (the operator was still busy after 2 minutes: the figures below include that)");
}

/// The share of one core the operator used since `c0` (its CPU seconds) at `t0`, in percent.
fn cpu_share(c0: Option<f64>, c1: Option<f64>, t0: Instant) -> f64 {
    match (c0, c1) {
        (Some(a), Some(b)) => (b - a) * 100.0 / t0.elapsed().as_secs_f64(),
        _ => f64::NAN,
    }
}

/// A session that types `key` bytes every `beat` into `cat` and reads them back, for `time`:
/// returns the connection, the bytes echoed, and how long each echo took (ms).
async fn echo_for(
    mut ws: Ws,
    key: usize,
    beat: Duration,
    time: Duration,
) -> Result<(Ws, u64, Vec<f64>)> {
    let mut frame = vec![b'k'; key + 1];
    frame[0] = 0;
    let mut tick = tokio::time::interval(beat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let until = Instant::now() + time;
    let (mut echoed, mut waits) = (0u64, Vec::new());
    while Instant::now() < until {
        tick.tick().await;
        let sent = Instant::now();
        ws.send(Message::Binary(frame.clone().into())).await?;
        let mut got = 0;
        while got < key {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&1) => got += b.len() - 1,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("a busy session ended"),
            }
        }
        echoed += got as u64;
        waits.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((ws, echoed, waits))
}

/// The operator's CPU time so far (user + system), in seconds.
async fn operator_cpu(env: &TestEnv) -> Option<f64> {
    let pid = env.operator_pid().await?;
    cpu_of(&format!("/proc/{pid}/stat"))
}
