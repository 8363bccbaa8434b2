//! Shell completion. `completion bash|zsh|fish` prints clap's static script (subcommands and
//! flags). For `kubectl aexec ...`, kubectl (1.26+) runs the helper `kubectl_complete-aexec`
//! with the words typed after `aexec` (the last one being completed) and reads cobra's
//! `__complete` answer: one candidate per line, then `:<directive>`. That answer completes
//! session names, pods, namespaces and contexts from the cluster.

use clap::CommandFactory;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{Api, api::ListParams};

use crate::{
    cli::{Cli, Global},
    connect,
};

/// cobra's ShellCompDirectiveNoFileComp: never fall back to file names.
pub const NO_FILE_COMP: u32 = 4;

/// What the word being completed is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// The first word: a subcommand, or a pod for the exec form.
    SubcommandOrPod,
    Pods,
    Sessions,
    Namespaces,
    Contexts,
    /// Fixed values (shells, formats, phases, outputs).
    Values(Vec<&'static str>),
    /// The flags of the (sub)command.
    Flags(Option<String>),
    Nothing,
}

const SESSION_COMMANDS: [&str; 10] = [
    "describe",
    "approve",
    "deny",
    "withdraw",
    "attach",
    "terminate",
    "watch",
    "replay",
    "export",
    "verify",
];
/// Flags that take a value (the word after them is that value, not a positional).
const VALUE_FLAGS: [&str; 26] = [
    "-n",
    "--namespace",
    "--context",
    "--kubeconfig",
    "--cluster",
    "--user",
    "-c",
    "--container",
    "-r",
    "--reason",
    "--wait",
    "-m",
    "--message",
    "-o",
    "--output",
    "--phase",
    "--format",
    "-s",
    "--speed",
    "--idle-limit",
    "--requester",
    "--pod",
    "--since",
    "--until",
    "--dir",
    "--public-key",
];

/// Decides what to complete from the words (pure). `words` ends with the word being completed.
pub fn plan(words: &[String]) -> Want {
    let Some((current, before)) = words.split_last() else {
        return Want::SubcommandOrPod;
    };
    let sub = first_positional(before).filter(|w| subcommands().contains(w));
    if let Some(prev) = before.last() {
        match prev.as_str() {
            "-n" | "--namespace" => return Want::Namespaces,
            "--context" => return Want::Contexts,
            "--phase" => {
                return Want::Values(aexec_crds::Phase::ALL.iter().map(|p| p.as_str()).collect());
            }
            "--format" => return Want::Values(vec!["v3", "v2", "text"]),
            "-o" | "--output" if sub.as_deref() == Some("list") => {
                return Want::Values(vec!["wide", "json", "yaml", "name"]);
            }
            p if VALUE_FLAGS.contains(&p) => return Want::Nothing,
            _ => {}
        }
    }
    if before.iter().any(|w| w == "--") {
        return Want::Nothing;
    }
    if current.starts_with('-') {
        return Want::Flags(sub);
    }
    let positionals = positionals(before);
    match sub.as_deref() {
        None if positionals.is_empty() => Want::SubcommandOrPod,
        None => Want::Nothing,
        Some("completion") if positionals.len() == 1 => Want::Values(vec!["bash", "zsh", "fish"]),
        Some(s) if SESSION_COMMANDS.contains(&s) && positionals.len() == 1 => Want::Sessions,
        Some(_) => Want::Nothing,
    }
}

fn subcommands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .flat_map(|c| {
            std::iter::once(c.get_name().to_owned())
                .chain(c.get_visible_aliases().map(str::to_owned))
        })
        .collect()
}

/// Words that are not flags or flag values.
fn positionals(words: &[String]) -> Vec<&String> {
    let mut out = Vec::new();
    let mut skip = false;
    for w in words {
        if skip {
            skip = false;
            continue;
        }
        if w == "--" {
            break;
        }
        if w.starts_with('-') {
            skip = VALUE_FLAGS.contains(&w.as_str());
            continue;
        }
        out.push(w);
    }
    out
}

fn first_positional(words: &[String]) -> Option<String> {
    positionals(words).first().map(|s| (*s).clone())
}

/// The long flags of the command (or subcommand).
fn flags(sub: Option<&str>) -> Vec<String> {
    let root = Cli::command();
    let cmd = sub.and_then(|s| root.find_subcommand(s)).unwrap_or(&root);
    let mut out: Vec<String> = cmd
        .get_arguments()
        .chain(root.get_arguments().filter(|a| a.is_global_set()))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The global connection flags found in the words, to list from the right cluster/namespace.
pub fn global_flags(words: &[String]) -> Global {
    let mut g = Global::default();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (w.as_str(), None),
        };
        let slot = match flag {
            "-n" | "--namespace" => &mut g.namespace,
            "--context" => &mut g.context,
            "--cluster" => &mut g.cluster,
            "--user" => &mut g.user,
            "--kubeconfig" => {
                if let Some(v) = inline.or_else(|| it.next().cloned()) {
                    g.kubeconfig = Some(v.into());
                }
                continue;
            }
            _ => continue,
        };
        *slot = inline.or_else(|| it.next().cloned());
    }
    g
}

/// The candidates for `words` (network lookups at the edges; failures give no candidates).
pub async fn candidates(words: &[String]) -> Vec<String> {
    let current = words.last().cloned().unwrap_or_default();
    let global = global_flags(&words[..words.len().saturating_sub(1)]);
    let names = match plan(words) {
        Want::SubcommandOrPod => {
            let mut v = subcommands();
            v.extend(pods(&global).await);
            v
        }
        Want::Pods => pods(&global).await,
        Want::Sessions => sessions(&global).await,
        Want::Namespaces => namespaces(&global).await,
        Want::Contexts => connect::load_kubeconfig(&global)
            .map(|k| k.contexts.into_iter().map(|c| c.name).collect())
            .unwrap_or_default(),
        Want::Values(v) => v.into_iter().map(str::to_owned).collect(),
        Want::Flags(sub) => flags(sub.as_deref()),
        Want::Nothing => Vec::new(),
    };
    names
        .into_iter()
        .filter(|n| n.starts_with(&current))
        .collect()
}

/// cobra's answer: candidates, one per line, then the directive.
pub fn answer(candidates: &[String]) -> String {
    let mut out = String::new();
    for c in candidates {
        out.push_str(c);
        out.push('\n');
    }
    out.push_str(&format!(":{NO_FILE_COMP}\n"));
    out
}

async fn pods(g: &Global) -> Vec<String> {
    names(g, |c| {
        Api::<Pod>::namespaced(c.client.clone(), &c.namespace)
    })
    .await
}

async fn sessions(g: &Global) -> Vec<String> {
    names(g, |c| {
        Api::<aexec_crds::ExecSession>::namespaced(c.client.clone(), &c.namespace)
    })
    .await
}

async fn namespaces(g: &Global) -> Vec<String> {
    names(g, |c| Api::<Namespace>::all(c.client.clone())).await
}

/// The names of the objects `api` lists; none when the cluster cannot be reached (completion
/// offers nothing rather than an error).
async fn names<K>(g: &Global, api: impl FnOnce(&connect::Conn) -> Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Ok(c) = connect::connect(g).await else {
        return Vec::new();
    };
    api(&c)
        .list_metadata(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn what_to_complete() {
        assert_eq!(plan(&w(&[""])), Want::SubcommandOrPod);
        assert_eq!(plan(&w(&["-n", "prod", "we"])), Want::SubcommandOrPod);
        assert_eq!(plan(&w(&["-n", ""])), Want::Namespaces);
        assert_eq!(plan(&w(&["describe", ""])), Want::Sessions);
        assert_eq!(
            plan(&w(&["--context", "x", "approve", "ex"])),
            Want::Sessions
        );
        assert_eq!(plan(&w(&["approve", "s1", ""])), Want::Nothing);
        assert_eq!(plan(&w(&["--context", ""])), Want::Contexts);
        assert_eq!(plan(&w(&["web", "--", ""])), Want::Nothing);
        assert_eq!(plan(&w(&["web", ""])), Want::Nothing);
        assert_eq!(
            plan(&w(&["list", "--phase", ""])).clone(),
            plan(&w(&["--phase", ""]))
        );
        assert_eq!(
            plan(&w(&["completion", ""])),
            Want::Values(vec!["bash", "zsh", "fish"])
        );
        assert_eq!(
            plan(&w(&["list", "-o", ""])),
            Want::Values(vec!["wide", "json", "yaml", "name"])
        );
        assert_eq!(plan(&w(&["list", "--a"])), Want::Flags(Some("list".into())));
        assert_eq!(plan(&w(&["export", "s1", "-o", ""])), Want::Nothing);
    }

    #[test]
    fn flags_and_answer() {
        let f = flags(Some("list"));
        assert!(
            f.contains(&"--all-namespaces".to_owned()) && f.contains(&"--namespace".to_owned())
        );
        let f = flags(None);
        assert!(f.contains(&"--reason".to_owned()) && f.contains(&"--no-wait".to_owned()));
        assert_eq!(answer(&w(&["a", "b"])), "a\nb\n:4\n");
        let g = global_flags(&w(&["-n", "prod", "--context=dev", "--kubeconfig", "/k"]));
        assert_eq!(g.namespace.as_deref(), Some("prod"));
        assert_eq!(g.context.as_deref(), Some("dev"));
        assert_eq!(g.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
        assert!(
            subcommands().contains(&"list".to_owned())
                && !subcommands().contains(&"__complete".to_owned())
        );
    }
}
