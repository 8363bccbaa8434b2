//! Reads the final stage of a Containerfile (Dockerfile syntax) into an image recipe.
//!
//! `./dev image` builds the operator's image without a container engine by applying the same
//! `Containerfile` that people with docker or buildah use. Earlier stages (the Rust build) are
//! replaced by directories the caller fills (`--stage build=DIR`); the final stage must be
//! `FROM scratch` and may only use instructions that need no running container: `ARG`, `COPY`,
//! `USER`, `ENTRYPOINT`, `CMD`, `ENV`, `LABEL`, `WORKDIR`, `EXPOSE`. Anything else is an error
//! that names the line, so the two ways of building can never silently differ.
//!
//! No crate on crates.io parses Dockerfiles and is kept up to date (the known one was last
//! released in 2021), and the subset needed here is small: see docs/image.md.

use std::collections::BTreeMap;

use crate::Error;

/// One `COPY` of the final stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// `--from=STAGE`; `None` copies from the build context.
    pub from: Option<String>,
    /// Source paths (relative to the context or the stage's root).
    pub sources: Vec<String>,
    /// Destination in the image.
    pub dest: String,
    /// `--chmod=MODE` (octal).
    pub chmod: Option<u32>,
    /// The instruction as written, for the image's history.
    pub text: String,
}

/// What the final stage says, with every variable substituted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipe {
    pub copies: Vec<Copy>,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub exposed_ports: Vec<String>,
    /// Names of the stages before the final one (what `COPY --from` may name).
    pub stages: Vec<String>,
}

/// Parses `text` and returns the recipe of its final stage. `build_args` override `ARG`
/// defaults, as `--build-arg` does.
pub fn parse(text: &str, build_args: &BTreeMap<String, String>) -> Result<Recipe, Error> {
    let mut recipe = Recipe::default();
    // ARGs declared before the first FROM are global: usable in FROM lines, and in a stage
    // only once re-declared there (Dockerfile semantics).
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    let mut stage_vars: BTreeMap<String, String> = BTreeMap::new();
    let mut in_final = false;
    let mut seen_from = false;
    let lines = logical_lines(text);
    let froms = lines
        .iter()
        .filter(|(_, l)| keyword(l).0.eq_ignore_ascii_case("FROM"))
        .count();
    let mut from_index = 0;
    for (line_no, line) in lines {
        let (kw, rest) = keyword(&line);
        let kw = kw.to_ascii_uppercase();
        let err = |msg: String| Error::Containerfile {
            line: line_no,
            message: msg,
        };
        if kw == "FROM" {
            from_index += 1;
            seen_from = true;
            stage_vars.clear();
            let words = split_words(rest).map_err(err)?;
            let words: Vec<&String> = words.iter().filter(|w| !w.starts_with("--")).collect();
            let image = words
                .first()
                .map(|w| substitute(w, &global))
                .ok_or_else(|| err("FROM without an image".into()))?;
            if from_index == froms {
                in_final = true;
                if image != "scratch" {
                    return Err(err(format!(
                        "the final stage must be FROM scratch to be built without a container engine (it is FROM {image})"
                    )));
                }
            } else if let (Some(kw_as), Some(name)) = (words.get(1), words.get(2))
                && kw_as.eq_ignore_ascii_case("AS")
            {
                recipe.stages.push(name.to_string());
            }
            continue;
        }
        if kw == "ARG" {
            let (name, default) = match rest.split_once('=') {
                Some((n, d)) => (n.trim().to_owned(), Some(unquote(d.trim()))),
                None => (rest.trim().to_owned(), None),
            };
            let value = build_args
                .get(&name)
                .cloned()
                .or(default)
                .or_else(|| global.get(&name).cloned())
                .unwrap_or_default();
            if seen_from {
                stage_vars.insert(name, value);
            } else {
                global.insert(name, value);
            }
            continue;
        }
        if !in_final {
            continue; // earlier stages are built by the caller
        }
        match kw.as_str() {
            "COPY" => {
                let words = split_words(rest).map_err(err)?;
                let mut from = None;
                let mut chmod = None;
                let mut paths = Vec::new();
                for w in words {
                    if let Some(f) = w.strip_prefix("--from=") {
                        from = Some(substitute(f, &stage_vars));
                    } else if let Some(m) = w.strip_prefix("--chmod=") {
                        chmod = Some(
                            u32::from_str_radix(m, 8)
                                .map_err(|_| err(format!("--chmod={m} is not an octal mode")))?,
                        );
                    } else if w.starts_with("--chown=") || w == "--link" {
                        // Ownership: every file in the image is root's and read-only to the
                        // process, which runs as USER; --chown would only loosen that.
                        return Err(err(format!(
                            "COPY {w} is not supported: files in the image belong to root"
                        )));
                    } else if w.starts_with("--") {
                        return Err(err(format!("COPY option {w} is not supported")));
                    } else {
                        paths.push(substitute(&w, &stage_vars));
                    }
                }
                if paths.len() < 2 {
                    return Err(err("COPY needs a source and a destination".into()));
                }
                let dest = paths.pop().unwrap_or_default();
                if let Some(f) = &from
                    && !recipe.stages.contains(f)
                {
                    return Err(err(format!("COPY --from={f} names no earlier stage")));
                }
                recipe.copies.push(Copy {
                    from,
                    sources: paths,
                    dest,
                    chmod,
                    text: line.clone(),
                });
            }
            "USER" => recipe.user = Some(substitute(rest.trim(), &stage_vars)),
            "WORKDIR" => recipe.workdir = Some(substitute(rest.trim(), &stage_vars)),
            "ENTRYPOINT" => recipe.entrypoint = Some(exec_form(rest, &stage_vars).map_err(err)?),
            "CMD" => recipe.cmd = Some(exec_form(rest, &stage_vars).map_err(err)?),
            "ENV" | "LABEL" => {
                for w in split_words(rest).map_err(err)? {
                    let (k, v) = w
                        .split_once('=')
                        .ok_or_else(|| err(format!("{kw} {w}: expected KEY=VALUE")))?;
                    let v = substitute(v, &stage_vars);
                    if kw == "ENV" {
                        stage_vars.insert(k.to_owned(), v.clone());
                        recipe.env.push((k.to_owned(), v));
                    } else {
                        recipe.labels.insert(k.to_owned(), v);
                    }
                }
            }
            "EXPOSE" => {
                for w in split_words(rest).map_err(err)? {
                    let w = substitute(&w, &stage_vars);
                    recipe.exposed_ports.push(if w.contains('/') {
                        w
                    } else {
                        format!("{w}/tcp")
                    });
                }
            }
            other => {
                return Err(err(format!(
                    "{other} in the final stage needs a container engine; ./dev image applies only \
                     ARG, COPY, USER, ENTRYPOINT, CMD, ENV, LABEL, WORKDIR and EXPOSE"
                )));
            }
        }
    }
    if !in_final {
        return Err(Error::Containerfile {
            line: 0,
            message: "no FROM line".into(),
        });
    }
    Ok(recipe)
}

/// Joins continuation lines (`\` at the end) and drops comments and blank lines; each item is
/// (the first line's number, the joined text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && trimmed.starts_with('#') {
            continue; // comments inside a continued instruction are dropped
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                acc.push_str(part.trim_end());
                acc.push(' ');
                current = Some((start, acc));
            }
            None => {
                acc.push_str(trimmed);
                out.push((start, acc));
            }
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    out
}

fn keyword(line: &str) -> (&str, &str) {
    match line.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim()),
        None => (line, ""),
    }
}

/// Splits shell-like words: whitespace separates, double or single quotes group, a backslash
/// escapes the next character. Variables are left for [`substitute`].
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                in_word = true;
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            (_, c) => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in: {s}"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn unquote(s: &str) -> String {
    split_words(s)
        .ok()
        .and_then(|w| w.into_iter().next())
        .unwrap_or_default()
}

/// Replaces `$NAME` and `${NAME}` with their values (unknown names become empty, as in docker).
fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '$' && i + 1 < bytes.len() {
            let (name, next) = if bytes[i + 1] == '{' {
                match bytes[i + 2..].iter().position(|&c| c == '}') {
                    Some(end) => (
                        bytes[i + 2..i + 2 + end].iter().collect::<String>(),
                        i + 3 + end,
                    ),
                    None => (String::new(), i),
                }
            } else {
                let len = bytes[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .count();
                (bytes[i + 1..i + 1 + len].iter().collect(), i + 1 + len)
            };
            if !name.is_empty() {
                out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
                i = next;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// `ENTRYPOINT ["a", "b"]`: the JSON (exec) form only. The shell form would need a shell, and
/// the image has none on purpose.
fn exec_form(rest: &str, vars: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let argv: Vec<String> = serde_json::from_str(rest.trim())
        .map_err(|_| format!("only the JSON form is supported (the image has no shell): {rest}"))?;
    Ok(argv.iter().map(|a| substitute(a, vars)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const FILE: &str = r#"
# syntax=docker/dockerfile:1
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN cargo build --release
FROM scratch
ARG VERSION=0.0.0-dev
ARG REVISION
COPY image/rootfs/ /
COPY --from=build --chmod=0755 /out/aexec-operator /usr/local/bin/
USER 65532:65532
ENV RUST_BACKTRACE=1
ENTRYPOINT ["/usr/local/bin/aexec-operator"]
EXPOSE 8443 8080/tcp
LABEL org.opencontainers.image.version="${VERSION}" \
      # a comment inside
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.title="aexec operator"
"#;

    #[test]
    fn final_stage_is_read_with_build_args() {
        let r = parse(FILE, &args(&[("VERSION", "1.2.3"), ("REVISION", "abc")])).expect("parse");
        assert_eq!(r.stages, vec!["build"]);
        assert_eq!(r.copies.len(), 2);
        assert_eq!(r.copies[0].from, None);
        assert_eq!(r.copies[0].sources, vec!["image/rootfs/"]);
        assert_eq!(r.copies[0].dest, "/");
        assert_eq!(r.copies[1].from.as_deref(), Some("build"));
        assert_eq!(r.copies[1].chmod, Some(0o755));
        assert_eq!(r.copies[1].dest, "/usr/local/bin/");
        assert_eq!(r.user.as_deref(), Some("65532:65532"));
        assert_eq!(
            r.entrypoint,
            Some(vec!["/usr/local/bin/aexec-operator".to_owned()])
        );
        assert_eq!(r.env, vec![("RUST_BACKTRACE".into(), "1".into())]);
        assert_eq!(r.exposed_ports, vec!["8443/tcp", "8080/tcp"]);
        assert_eq!(r.labels["org.opencontainers.image.version"], "1.2.3");
        assert_eq!(r.labels["org.opencontainers.image.revision"], "abc");
        assert_eq!(r.labels["org.opencontainers.image.title"], "aexec operator");
    }

    #[test]
    fn arg_defaults_apply_without_build_args() {
        let r = parse(FILE, &BTreeMap::new()).expect("parse");
        assert_eq!(r.labels["org.opencontainers.image.version"], "0.0.0-dev");
        assert_eq!(r.labels["org.opencontainers.image.revision"], "");
    }

    #[test]
    fn run_in_the_final_stage_is_refused_with_its_line() {
        let text = "FROM scratch\nCOPY a /a\nRUN echo hi\n";
        let e = parse(text, &BTreeMap::new()).expect_err("RUN");
        let msg = e.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(
            msg.contains("RUN in the final stage needs a container engine"),
            "{msg}"
        );
    }

    #[test]
    fn final_stage_must_be_scratch() {
        let e = parse("FROM debian:12\nCOPY a /a\n", &BTreeMap::new()).expect_err("base");
        assert!(e.to_string().contains("must be FROM scratch"), "{e}");
    }

    #[test]
    fn shell_form_entrypoint_and_unknown_stage_are_refused() {
        let e = parse("FROM scratch\nENTRYPOINT /bin/x\n", &BTreeMap::new()).expect_err("shell");
        assert!(e.to_string().contains("JSON form"), "{e}");
        let e =
            parse("FROM scratch\nCOPY --from=nope /a /a\n", &BTreeMap::new()).expect_err("stage");
        assert!(e.to_string().contains("names no earlier stage"), "{e}");
        let e =
            parse("FROM scratch\nCOPY --chown=1:1 a /a\n", &BTreeMap::new()).expect_err("chown");
        assert!(e.to_string().contains("belong to root"), "{e}");
    }

    #[test]
    fn words_quotes_and_escapes() {
        assert_eq!(
            split_words(r#"a="b c" d='e $f' g\ h"#).expect("split"),
            vec!["a=b c", "d=e $f", "g h"]
        );
        assert!(split_words("a=\"b").is_err());
        let vars = args(&[("A", "x"), ("B_2", "y")]);
        assert_eq!(substitute("$A-${B_2}-$C-$", &vars), "x-y--$");
    }
}
