//! The command line: kubectl exec's flags and habits, plus the review and control subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  # Ask for a shell in pod api-7f9c, wait for approval, then attach (like kubectl exec -it)
  kubectl aexec -n prod api-7f9c -it -r INC-1234 -- bash

  # Run one command in the first pod of a deployment, in container app
  kubectl aexec deploy/api -c app -- cat /etc/os-release

  # Pipe input into a command (no terminal)
  echo 'select 1;' | kubectl aexec -i db-0 -- psql

  # Ask now, attach later (prints the session name)
  kubectl aexec --no-wait api-7f9c -it -- bash
  kubectl aexec attach exec-7xk2p

  # Copy files out of (or into) a pod, recorded; debug a pod that has no shell
  kubectl aexec cp -r INC-1234 api-7f9c:/var/log/app ./app-logs
  kubectl aexec debug api-7f9c -it --image busybox:1.36 --target app -- sh

  # Review: list, describe, approve or deny, replay, export, verify
  kubectl aexec list -A --phase Pending
  kubectl aexec approve exec-7xk2p -m 'ok for INC-1234'
  kubectl aexec replay exec-7xk2p --speed 2 --idle-limit 1

  # Sessions whose ExecSession is gone, from the signed records in the store
  kubectl aexec list --archived -A --requester alice --since 720h
  kubectl aexec verify exec-7xk2p

  # Verify a copy of a recording with no cluster at all
  kubectl aexec keys > aexec-keys.pem
  kubectl aexec verify --dir ./prod/exec-7xk2p-<uid> --public-key aexec-keys.pem

  # Which plugin and operator versions are talking
  kubectl aexec version

A pod named like a subcommand (list, approve, ...) is reached as pod/NAME.";

/// `kubectl aexec`: approved, recorded `kubectl exec`.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-aexec",
    bin_name = "kubectl aexec",
    version,
    about = "Execute a command in a container after approval, recorded (approved, audited kubectl exec).",
    long_about = "Execute a command in a container, like kubectl exec, through an approval workflow.\n\n\
        kubectl aexec creates an ExecSession for the command, waits until the ExecPolicy that \
        governs the pod approves it (at once, or after other people approve it with \
        `kubectl aexec approve`), then attaches through the aexec operator, which runs the command \
        and records every byte. The exit code is the command's, as with kubectl exec.",
    after_help = EXAMPLES,
    override_usage = "kubectl aexec [flags] POD|TYPE/NAME [-c CONTAINER] -- COMMAND [ARGS...]\n       kubectl aexec SUBCOMMAND [flags]",
    subcommand_value_name = "SUBCOMMAND",
    subcommand_help_heading = "Subcommands",
    subcommand_negates_reqs = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub exec: ExecArgs,
}

/// Connection flags, as kubectl spells them.
#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, a list, else ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig cluster to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,

    /// The kubeconfig user to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,

    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// The exec request: `kubectl aexec [flags] POD|TYPE/NAME [-c CONTAINER] -- COMMAND [ARGS...]`.
#[derive(Debug, Clone, Default, Args)]
pub struct ExecArgs {
    /// The pod (POD, pod/NAME) or a workload whose first active pod is used
    /// (deploy/NAME, rs/NAME, sts/NAME, ds/NAME).
    #[arg(value_name = "POD|TYPE/NAME")]
    pub target: Vec<String>,

    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,

    /// Container name (default: the pod's kubectl.kubernetes.io/default-container annotation,
    /// else its first container).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,

    /// Pass stdin to the container.
    #[arg(short = 'i', long)]
    pub stdin: bool,

    /// Stdin is a TTY (a terminal for the command; needs -i).
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Why you need this (a ticket or incident); shown to approvers and kept with the recording.
    #[arg(short = 'r', long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Give up waiting for approval after this long (like 30s, 5m); the request stays open.
    #[arg(long, value_name = "DURATION", conflicts_with = "no_wait")]
    pub wait: Option<kube::core::Duration>,

    /// Create the request, print its name and exit; attach later with `kubectl aexec attach`.
    #[arg(long)]
    pub no_wait: bool,

    /// Print no progress or notices, only errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List exec sessions (like kubectl get execsessions); with --archived, the signed session
    /// records in the store (sessions whose object may be gone).
    #[command(visible_alias = "ls", visible_alias = "get")]
    List(ListArgs),
    /// Show a session: what was asked, policy, approvals, timeline and recording (from its
    /// signed record in the store when the ExecSession is gone).
    Describe(NameArg),
    /// Approve a session (approvers named by its policy; never your own).
    Approve(DecideArgs),
    /// Deny a session, saying why.
    Deny(DecideArgs),
    /// Withdraw your own request before it is attached: it stays, in phase Withdrawn.
    Withdraw(DecideArgs),
    /// Attach to a session created with --no-wait, waiting for its approval first.
    Attach(AttachArgs),
    /// Copy files and directories to and from a container, after approval, recorded (like
    /// kubectl cp: the files themselves and their SHA-256 are kept with the recording).
    Cp(CpArgs),
    /// Debug a pod in a container of your image (like kubectl debug with an ephemeral
    /// container), after approval, recorded: for images with no shell.
    Debug(DebugArgs),
    /// End a running session.
    Terminate(NameArg),
    /// Watch a running session's terminal live, read-only: what it showed so far, then what it
    /// shows. Keys: q leaves; T terminates the session (asks first; an observer needs the right
    /// to, a moderator has it).
    Watch(WatchArgs),
    /// Play a session's recording in the terminal with its real timing.
    Replay(ReplayArgs),
    /// Find the sessions that typed or showed something (a regular expression): where in each,
    /// and the replay command to see it in context. Auditors only.
    Search(SearchArgs),
    /// Open the review console in the browser: sessions live, approve and deny, play and
    /// verify recordings, search. Served on 127.0.0.1 with a one-time token, acting with your
    /// kubeconfig's identity only.
    Ui(UiArgs),
    /// Write a session's recording to a file (asciicast v3, v2 for older players, or text).
    Export(ExportArgs),
    /// Check a session's signed record and its recording's hash chain (in the cluster, or in a
    /// directory copied out of the store with --dir).
    Verify(VerifyArgs),
    /// Print the public keys that verify session records (PEM; keep them to verify offline).
    Keys(KeysArgs),
    /// Print the plugin's version and the operator's (from the cluster), warning when their
    /// minor versions differ.
    Version(VersionArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completion(CompletionArgs),
    /// Completion candidates for the words given (kubectl's plugin completion protocol).
    #[command(name = "__complete", hide = true)]
    Complete(CompleteArgs),
}

const CP_EXAMPLES: &str = "\
Examples:
  # Copy /var/log/app out of pod api-7f9c into ./app-logs (a directory is copied whole)
  kubectl aexec cp -r INC-1234 api-7f9c:/var/log/app ./app-logs

  # The same pod in namespace prod, container app
  kubectl aexec cp prod/api-7f9c:/etc/app/config.yaml ./config.yaml -c app

  # Copy a local file into the pod (the pod path names the file written)
  kubectl aexec cp ./fix.sql db-0:/tmp/fix.sql

  # What was copied, and the exact files, for an auditor
  kubectl aexec describe cp-8x2k1
  kubectl aexec export cp-8x2k1 --files ./evidence

The copy is a session like any other: the ExecPolicy governing the pod must allow it
(limits.allowCopy: Download, Upload or Both) and may require approvals. The container needs tar,
as for kubectl cp. Entries of a downloaded tar that would land outside the destination
(.., absolute paths, links pointing out) are refused, and symbolic links are not created.";

const DEBUG_EXAMPLES: &str = "\
Examples:
  # A shell beside container app of pod api-7f9c, whose image has none
  kubectl aexec debug api-7f9c -it --image registry.example/debug:1.0 --target app -- sh

  # One command, its input piped
  echo 'ls /proc/1/root/etc' | kubectl aexec debug api-7f9c -i --image busybox:1.36 -- sh

The operator adds an ephemeral container of IMAGE to the pod once the session is approved,
sharing the process namespace of the target container (--target, else the pod's default
container): /proc/1/root is the target's filesystem when the target runs as PID 1. The ExecPolicy
must list IMAGE in limits.debugImages. An ephemeral container stays in the pod (stopped) after
the session; a pod can have any number of them.";

/// `kubectl aexec debug`: kubectl debug's flags for ephemeral containers.
#[derive(Debug, Args)]
#[command(after_help = DEBUG_EXAMPLES)]
pub struct DebugArgs {
    /// The pod to debug.
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND", required = true)]
    pub command: Vec<String>,
    /// The image of the debug container (as the policy's limits.debugImages names it).
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// The container whose processes the debug container sees (default: the pod's default
    /// container).
    #[arg(long, value_name = "CONTAINER")]
    pub target: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Allocate a terminal (needs -i in practice, as with kubectl).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Why you need this session (a ticket or incident); shown to approvers.
    #[arg(short = 'r', long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Give up waiting for approval after this long (like 30s, 5m).
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<kube::core::Duration>,
    /// Print no progress or notices, only errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `kubectl aexec cp`: kubectl cp's arguments.
#[derive(Debug, Args)]
#[command(after_help = CP_EXAMPLES)]
pub struct CpArgs {
    /// What to copy: a local path, or [NAMESPACE/]POD:PATH in a container.
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where to: a local path, or [NAMESPACE/]POD:PATH in a container.
    #[arg(value_name = "DEST")]
    pub dst: String,
    /// The container (default: the pod's default container, or its only one).
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
    /// Why you need this copy (a ticket or incident); shown to approvers, kept with the
    /// recording.
    #[arg(short = 'r', long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Give up waiting for approval after this long (like 30s, 5m).
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<kube::core::Duration>,
    /// Print no progress or notices, only errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// The session's name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The session's name.
    pub name: String,
    /// A comment kept with the decision (why).
    #[arg(short = 'm', long, value_name = "TEXT")]
    pub message: Option<String>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The session's name.
    pub name: String,
    /// Give up waiting for approval after this long (like 30s, 5m).
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<kube::core::Duration>,
    /// Print no progress or notices, only errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The session's name (waits for it to start when it is still Pending or Approved).
    pub name: String,
    /// Watch as a moderator: for sessions whose policy has `moderation`, the command starts only
    /// while enough moderators watch, and their leaving holds the requester's input or ends the
    /// session. Only people the policy names; never your own session.
    #[arg(long)]
    pub moderate: bool,
    /// Print no notices, only the session's output and errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Wide,
    Json,
    Yaml,
    Name,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// List sessions in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only sessions in this phase (Pending, Approved, Denied, Expired, Withdrawn, Active,
    /// Succeeded, Failed, Terminated).
    #[arg(long, value_name = "PHASE", value_parser = parse_phase)]
    pub phase: Option<aexec_crds::Phase>,
    /// List the signed session records in the store instead of the ExecSessions: every
    /// finished session, also those whose object was deleted (after the retention or by an
    /// administrator). The OBJECT column says whether the ExecSession still exists.
    #[arg(long)]
    pub archived: bool,
    /// With --archived: only sessions requested by this user.
    #[arg(long, value_name = "USER", requires = "archived")]
    pub requester: Option<String>,
    /// With --archived: only sessions in this pod.
    #[arg(long, value_name = "POD", requires = "archived")]
    pub pod: Option<String>,
    /// With --archived: only sessions going on at or after this time (RFC 3339), or within
    /// this long before now (like 24h).
    #[arg(long, value_name = "TIME|DURATION", requires = "archived", value_parser = parse_when)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// With --archived: only sessions requested at or before this time (RFC 3339), or this long
    /// before now.
    #[arg(long, value_name = "TIME|DURATION", requires = "archived", value_parser = parse_when)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Output format: wide, json, yaml or name (default: a table).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// Do not print the header line.
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The session's name.
    pub name: String,
    /// Playback speed (2 is twice as fast).
    #[arg(short = 's', long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Shorten pauses longer than this many seconds to this many.
    #[arg(short = 'i', long, value_name = "SECONDS", value_parser = parse_idle)]
    pub idle_limit: Option<f64>,
    /// Start this many seconds into the session (what came before is shown at once), as
    /// `search` prints it.
    #[arg(long, value_name = "SECONDS", value_parser = parse_from)]
    pub from: Option<f64>,
}

const SEARCH_EXAMPLES: &str = "\
Examples:
  # Who typed DROP TABLE in the last day, anywhere?
  kubectl aexec search -A --since 24h --input '(?i)drop\\s+table'

  # What alice's sessions in prod showed that looks like a secret
  kubectl aexec search -n prod --requester alice --output 'BEGIN [A-Z ]*PRIVATE KEY'

Input is matched as the lines people typed (backspace, Ctrl-U and Ctrl-W applied, arrow keys
dropped); output as the lines the terminal showed (through a terminal emulator, so cursor
movement and full-screen programs do not hide text). Each recording is verified by the operator
and read in bounded memory. Reading recordings is the auditors' right (aexec-auditor).";

/// `kubectl aexec search`.
#[derive(Debug, Args)]
#[command(after_help = SEARCH_EXAMPLES)]
pub struct SearchArgs {
    /// A regular expression (Rust's `regex` syntax; `(?i)` for case-insensitive).
    pub pattern: String,
    /// Search sessions in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only sessions created within this long before now (like 24h), or since this time (RFC
    /// 3339).
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_when)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only sessions requested by this user.
    #[arg(long, value_name = "USER")]
    pub requester: Option<String>,
    /// Match only what was typed.
    #[arg(long, conflicts_with = "output")]
    pub input: bool,
    /// Match only what was shown.
    #[arg(long)]
    pub output: bool,
    /// Also search the signed records in the store of sessions that no longer exist (deleted,
    /// or past the retention), as `list --archived` lists them.
    #[arg(long)]
    pub archived: bool,
}

/// `kubectl aexec ui [--port N] [--no-browser]`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
The console is a web page served by this process on 127.0.0.1 only, for as long as it runs
(Ctrl-C stops it). The URL it prints carries a random token, as Jupyter's does: anyone on this
machine without the URL is refused. Everything the page does, it does with your kubeconfig's
credentials (the same identity and RBAC as the other commands): it adds no login and no power.

Examples:
  kubectl aexec ui                      # opens the browser at the printed URL
  kubectl aexec ui -n prod --port 8765  # the page starts on namespace prod; a fixed port
  kubectl aexec ui -A                   # the page starts on every namespace
  kubectl aexec ui --no-browser         # print the URL only (over ssh: forward the port)")]
pub struct UiArgs {
    /// Pages start on every namespace (default: the namespace of -n, else the context's).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The port on 127.0.0.1 (default: a free one).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Do not open a browser; print the URL only.
    #[arg(long)]
    pub no_browser: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// asciicast v3, exactly as recorded (stderr tags, exact bytes).
    V3,
    /// asciicast v2, for players that do not read v3.
    V2,
    /// A plain-text transcript.
    Text,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::V3 => "v3",
            Format::V2 => "v2",
            Format::Text => "text",
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The session's name.
    pub name: String,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The format.
    #[arg(long, value_enum, default_value_t = Format::V3)]
    pub format: Format,
    /// For a copy (kubectl aexec cp): write the files it moved into this directory instead,
    /// exactly as they were copied, after checking them against the recording.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "format"])]
    pub files: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Online, the record's signature is checked with the keys the operator publishes \
(kubectl aexec keys), or with the ones pinned by --public-key; then the manifest against the \
signed record, and every segment against the manifest. A recording rewritten in the store, even \
consistently, fails on the signature or the signed chain head, whether the ExecSession still \
exists or not.\n\nOffline (--dir), the directory is a session's files copied out of the store \
(record.json, manifest.json, seg-*.cast, seg-*.json), e.g. `aws s3 cp --recursive \
s3://BUCKET/NAMESPACE/SESSION-UID/ DIR`; no cluster is contacted."
)]
pub struct VerifyArgs {
    /// The session's name (or its recording's name, SESSION-UID).
    #[arg(required_unless_present = "dir")]
    pub name: Option<String>,
    /// Verify the session's files in this directory instead, without any cluster (needs
    /// --public-key).
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "name",
        requires = "public_key"
    )]
    pub dir: Option<PathBuf>,
    /// Trust only the public keys in this PEM file (from kubectl aexec keys) instead of the
    /// ones the operator publishes now.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Output format: json or yaml (default: PEM).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<JsonOrYaml>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JsonOrYaml {
    Json,
    Yaml,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  # The plugin's version and the operator's in the current context's cluster
  kubectl aexec version

  # The plugin's only (no cluster needed)
  kubectl aexec version --client

  # For scripts
  kubectl aexec version -o json")]
pub struct VersionArgs {
    /// Only the plugin's version: the cluster is not contacted.
    #[arg(long)]
    pub client: bool,
    /// Output format: json or yaml (default: two lines of text).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<JsonOrYaml>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Install:\n  bash: kubectl aexec completion bash > /etc/bash_completion.d/kubectl-aexec\n  zsh:  kubectl aexec completion zsh > \"${fpath[1]}/_kubectl-aexec\"\n  fish: kubectl aexec completion fish > ~/.config/fish/completions/kubectl-aexec.fish\n\nAs `kubectl aexec ...` (kubectl 1.26+), kubectl's own completion runs the helper\nkubectl_complete-aexec shipped next to the plugin: session names, pods and namespaces complete."
)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// The words after `kubectl aexec`, the last one being completed.
    #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
    pub words: Vec<String>,
}

fn parse_phase(s: &str) -> Result<aexec_crds::Phase, String> {
    aexec_crds::Phase::ALL
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let all: Vec<&str> = aexec_crds::Phase::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown phase {s:?}: use one of {}", all.join(", "))
        })
}

/// A time (RFC 3339), or a duration before now (`24h`).
pub fn parse_when(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    parse_when_at(s, chrono::Utc::now())
}

fn parse_when_at(
    s: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    match s.parse::<kube::core::Duration>() {
        Ok(d) if !d.is_negative() => {
            let d = chrono::TimeDelta::from_std(d.into()).map_err(|e| e.to_string())?;
            Ok(now - d)
        }
        _ => Err(format!(
            "{s:?} is neither a time like 2026-01-31T12:00:00Z nor a duration like 24h"
        )),
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1000.0 => Ok(v),
        _ => Err(format!(
            "speed must be a number above 0 (up to 1000), not {s:?}"
        )),
    }
}

fn parse_idle(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "idle limit must be a number of seconds above 0, not {s:?}"
        )),
    }
}

fn parse_from(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "--from must be a number of seconds into the session (0 or more), not {s:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn replay_starts_from_a_time_search_printed() {
        let cli = Cli::try_parse_from(["kubectl-aexec", "replay", "s1", "--from", "0.0"])
            .expect("0 is the start");
        assert!(matches!(cli.command, Some(Command::Replay(r)) if r.from == Some(0.0)));
        let e = Cli::try_parse_from(["kubectl-aexec", "replay", "s1", "--from=-1"])
            .expect_err("negative");
        assert!(e.to_string().contains("seconds into the session"), "{e}");
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-aexec").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_form_like_kubectl() {
        let c = parse(&[
            "-n", "prod", "web", "-it", "-c", "app", "-r", "INC-1", "--", "sh", "-c", "ls -l",
        ])
        .expect("parses");
        assert!(c.command.is_none());
        assert_eq!(c.global.namespace.as_deref(), Some("prod"));
        assert_eq!(c.exec.target, vec!["web"]);
        assert_eq!(c.exec.command, vec!["sh", "-c", "ls -l"]);
        assert!(c.exec.stdin && c.exec.tty);
        assert_eq!(c.exec.container.as_deref(), Some("app"));
        assert_eq!(c.exec.reason.as_deref(), Some("INC-1"));
    }

    #[test]
    fn subcommands_and_global_flags() {
        let c = parse(&[
            "list",
            "-A",
            "--phase",
            "pending",
            "-o",
            "wide",
            "--context",
            "x",
        ])
        .expect("parses");
        match c.command {
            Some(Command::List(l)) => {
                assert!(l.all_namespaces);
                assert_eq!(l.phase, Some(aexec_crds::Phase::Pending));
                assert_eq!(l.output, Some(Output::Wide));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.global.context.as_deref(), Some("x"));
        let c = parse(&["approve", "s1", "-m", "ok", "-n", "ns"]).expect("parses");
        assert!(
            matches!(c.command, Some(Command::Approve(ref d)) if d.message.as_deref() == Some("ok"))
        );
        assert_eq!(c.global.namespace.as_deref(), Some("ns"));
        assert!(parse(&["list", "--phase", "Sleeping"]).is_err());
        assert!(parse(&["replay", "s1", "--speed", "0"]).is_err());
        let c = parse(&["--wait", "5m", "web", "--", "id"]).expect("parses");
        assert_eq!(
            c.exec.wait.map(std::time::Duration::from),
            Some(std::time::Duration::from_secs(300))
        );
        assert!(parse(&["--wait", "5m", "--no-wait", "web", "--", "id"]).is_err());
        assert!(parse(&["--wait", "five", "web", "--", "id"]).is_err());
    }

    #[test]
    fn global_flags_before_subcommands() {
        let c = parse(&[
            "--kubeconfig",
            "/k",
            "-n",
            "ns",
            "approve",
            "s1",
            "-m",
            "ok",
        ])
        .expect("parses");
        assert!(
            matches!(c.command, Some(Command::Approve(_))),
            "{:?}",
            c.command
        );
        assert!(c.exec.target.is_empty());
    }

    #[test]
    fn archive_and_offline_verify_flags() {
        let c = parse(&[
            "list",
            "--archived",
            "-A",
            "--requester",
            "alice",
            "--since",
            "24h",
        ])
        .expect("parses");
        match c.command {
            Some(Command::List(l)) => {
                assert!(l.archived && l.all_namespaces);
                assert_eq!(l.requester.as_deref(), Some("alice"));
                assert!(l.since.is_some());
            }
            other => panic!("{other:?}"),
        }
        // Archive filters need --archived.
        assert!(parse(&["list", "--requester", "alice"]).is_err());
        let c = parse(&["verify", "--dir", "d", "--public-key", "k.pem"]).expect("parses");
        assert!(matches!(c.command, Some(Command::Verify(ref v)) if v.name.is_none()));
        assert!(
            parse(&["verify", "--dir", "d"]).is_err(),
            "offline needs a key"
        );
        assert!(parse(&["verify"]).is_err(), "a name or --dir");
        assert!(parse(&["verify", "s1", "--dir", "d", "--public-key", "k"]).is_err());
        assert!(parse(&["verify", "s1", "--public-key", "k.pem"]).is_ok());
        assert!(parse(&["list", "--phase", "withdrawn"]).is_ok());
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
            .expect("t")
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_when_at("24h", now).expect("duration").to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_when_at("2025-12-31T10:00:00Z", now)
                .expect("time")
                .to_rfc3339(),
            "2025-12-31T10:00:00+00:00"
        );
        assert!(parse_when_at("yesterday", now).is_err());
    }

    #[test]
    fn words_without_separator_are_kept_for_a_clear_error() {
        // `kubectl aexec web ls`: clap accepts it; the request check explains the `--`.
        let c = parse(&["web", "ls", "-l"]);
        // `-l` is not a flag of ours: clap refuses it, with its own message.
        assert!(c.is_err());
        let c = parse(&["web", "ls"]).expect("parses");
        assert_eq!(c.exec.target, vec!["web", "ls"]);
        assert!(c.exec.command.is_empty());
    }
}
