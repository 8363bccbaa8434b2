//! `kubectl aexec`: approved, recorded `kubectl exec`. The binary's `main` calls [`run`]; the
//! completion helper calls [`complete`].
//!
//! Pure logic (argument and target resolution, progress text, tables, replay timing, exit
//! codes, completion planning) lives in functions without I/O, tested by unit tests; the
//! commands in [`commands`] do the I/O around them.

pub mod attach;
pub mod cli;
pub mod commands;
pub mod complete;
pub mod connect;
pub mod copy;
pub mod cp;
pub mod error;
pub mod progress;
pub mod records;
pub mod replay;
pub mod search;
pub mod signals;
pub mod table;
pub mod target;
pub mod terminal;
pub mod ui;
pub mod version;
pub mod watch;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Runs the command line `args` and returns the process's exit code. Errors are printed as one
/// line (`error: ...`), like kubectl.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    terminal::install_panic_hook();
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return 1;
        }
    };
    let code = match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        // The reader of our output went away: the shell's code for SIGPIPE, no message.
        Err(error::Error::OutputClosed) => 141,
        Err(e) => {
            terminal::restore();
            eprintln!("error: {}", one_line(&e.to_string()));
            1
        }
    };
    terminal::restore();
    // Threads blocked on stdin must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

/// Messages are one line: embedded line breaks (from parsers quoting the input) are folded.
pub fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn dispatch(cli: Cli) -> error::Result<i32> {
    match &cli.command {
        Some(Command::Completion(c)) => return commands::completion(c.shell),
        Some(Command::Complete(c)) => {
            error::out(&complete::answer(&complete::candidates(&c.words).await))?;
            return Ok(0);
        }
        _ => {}
    }
    // Without a `--`, words before a subcommand's name are taken as a pod: refuse, not ignore.
    if cli.command.is_some() && (!cli.exec.target.is_empty() || !cli.exec.command.is_empty()) {
        return Err(error::Error::Usage(format!(
            "unexpected {:?} before the subcommand: give a subcommand its own arguments, or run \
             a command with POD -- COMMAND",
            cli.exec
                .target
                .iter()
                .chain(&cli.exec.command)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        )));
    }
    // Bad arguments are reported before the kubeconfig is even read.
    if cli.command.is_none() {
        target::split_exec_args(&cli.exec.target, &cli.exec.command)?;
    }
    if let Some(Command::Cp(a)) = &cli.command {
        cp::plan(&a.src, &a.dst).map_err(|e| error::Error::Usage(e.to_string()))?;
    }
    // Offline verification: no kubeconfig, no cluster.
    if let Some(Command::Verify(v)) = &cli.command
        && v.dir.is_some()
    {
        return commands::verify_dir(v).await;
    }
    // The client's version is printed even without a cluster.
    if let Some(Command::Version(v)) = &cli.command {
        let conn = if v.client {
            None
        } else {
            Some(connect::connect(&cli.global).await)
        };
        return version::version(conn, v).await;
    }
    let conn = connect::connect(&cli.global).await?;
    match &cli.command {
        None => commands::exec(&conn, &cli.exec).await,
        Some(Command::List(l)) if l.archived => commands::list_archived(&conn, l).await,
        Some(Command::List(l)) => commands::list(&conn, l).await,
        Some(Command::Describe(n)) => commands::describe(&conn, &n.name).await,
        Some(Command::Approve(d)) => commands::decide(&conn, d, true).await,
        Some(Command::Deny(d)) => commands::decide(&conn, d, false).await,
        Some(Command::Withdraw(d)) => commands::withdraw(&conn, d).await,
        Some(Command::Keys(k)) => commands::keys(&conn, k).await,
        Some(Command::Attach(a)) => commands::attach_existing(&conn, a).await,
        Some(Command::Cp(a)) => copy::cp(&conn, a).await,
        Some(Command::Debug(a)) => commands::debug(&conn, a).await,
        Some(Command::Terminate(n)) => commands::terminate(&conn, &n.name).await,
        Some(Command::Watch(w)) => watch::watch(&conn, w).await,
        Some(Command::Replay(r)) => commands::replay(&conn, r).await,
        Some(Command::Search(a)) => search::search(&conn, a).await,
        Some(Command::Ui(a)) => ui::serve(&conn, &cli.global, a).await,
        Some(Command::Export(e)) if e.files.is_some() => copy::export_files(&conn, e).await,
        Some(Command::Export(e)) => commands::export(&conn, e).await,
        Some(Command::Verify(v)) => commands::verify(&conn, v).await,
        Some(Command::Completion(_)) | Some(Command::Complete(_)) | Some(Command::Version(_)) => {
            Ok(0)
        }
    }
}

/// The `kubectl_complete-aexec` helper: `args` are the words after `kubectl aexec`, the last
/// one being completed. Prints cobra's `__complete` answer.
pub fn complete(args: impl IntoIterator<Item = String>) -> i32 {
    let words: Vec<String> = args.into_iter().collect();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        let _ = error::out(&complete::answer(&[]));
        return 0;
    };
    let candidates = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            complete::candidates(&words),
        )
        .await
        .unwrap_or_default()
    });
    let _ = error::out(&complete::answer(&candidates));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a: b\n --> x\n\n  | y\n"), "a: b --> x | y");
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn words_before_a_subcommand_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let cli = Cli::try_parse_from(["kubectl-aexec", "web", "list"]).expect("parses");
        // `web list` is a pod and a word: the exec check explains the `--`.
        let e = rt.block_on(dispatch(cli)).expect_err("refused");
        assert!(e.to_string().contains("put `--` before the command"), "{e}");
    }
}
