//! `kubectl aexec version`: the plugin's version and the operator's. The operator publishes its
//! version in its API group's discovery document (the key `aexecVersion` of
//! `GET /apis/subresources.aexec.dev/v1alpha1`), which every authenticated user may read, so no
//! role is needed. Like `kubectl version`: the client's version is printed even when the cluster
//! cannot be reached, and the exit code then says so.

use serde::Serialize;

use crate::{
    cli::{JsonOrYaml, VersionArgs},
    connect::Conn,
    error::{Error, Result, out},
};

/// This plugin's version (the workspace's).
pub const CLIENT: &str = env!("CARGO_PKG_VERSION");

/// The key of the discovery document that holds the operator's version.
pub const DISCOVERY_KEY: &str = "aexecVersion";

/// What `-o json|yaml` prints.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Versions {
    pub client_version: Info,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_version: Option<Info>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Info {
    /// `v` + the semantic version.
    pub version: String,
}

fn info(v: &str) -> Info {
    Info {
        version: format!("v{}", v.trim_start_matches('v')),
    }
}

/// `(major, minor)` of a version like `1.2.3`, `v1.2.3` or `1.2.3-rc.1`.
pub fn major_minor(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim_start_matches('v').split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The warning for a plugin and an operator whose major or minor versions differ, saying which
/// side to upgrade; `None` when they match (patch releases are compatible).
pub fn skew_warning(client: &str, operator: &str) -> Option<String> {
    let (c, o) = (major_minor(client)?, major_minor(operator)?);
    if c == o {
        return None;
    }
    let advice = if c < o {
        "upgrade the plugin: kubectl krew upgrade aexec"
    } else {
        "upgrade the operator (its Helm chart), or use the plugin release that matches it"
    };
    Some(format!(
        "WARNING: the plugin (v{}) and the operator (v{}) differ in minor version, and they may \
         not understand each other: {advice}",
        client.trim_start_matches('v'),
        operator.trim_start_matches('v')
    ))
}

/// The operator's version in a discovery document; `None` when it publishes none.
pub fn from_discovery(doc: &serde_json::Value) -> Option<String> {
    doc.get(DISCOVERY_KEY)?.as_str().map(str::to_owned)
}

/// The text, JSON or YAML for `versions`.
pub fn render(versions: &Versions, format: Option<JsonOrYaml>) -> Result<String> {
    Ok(match format {
        None => {
            let mut s = format!("Client Version: {}\n", versions.client_version.version);
            if let Some(o) = &versions.operator_version {
                s += &format!("Operator Version: {}\n", o.version);
            }
            s
        }
        Some(JsonOrYaml::Json) => serde_json::to_string_pretty(versions)
            .map(|s| s + "\n")
            .map_err(|e| Error::Io(e.to_string()))?,
        Some(JsonOrYaml::Yaml) => {
            serde_yaml::to_string(versions).map_err(|e| Error::Io(e.to_string()))?
        }
    })
}

/// `version`: `conn` is `None` with `--client` (the cluster is not contacted), else the
/// connection or why there is none (then the client's version is printed, and the error
/// returned).
pub async fn version(conn: Option<Result<Conn>>, args: &VersionArgs) -> Result<i32> {
    let client_only = Versions {
        client_version: info(CLIENT),
        operator_version: None,
    };
    let operator = match conn {
        None => {
            out(&render(&client_only, args.output)?)?;
            return Ok(0);
        }
        Some(Ok(c)) => operator_version(&c).await,
        Some(Err(e)) => Err(e),
    };
    let operator = match operator {
        Ok(v) => v,
        Err(e) => {
            out(&render(&client_only, args.output)?)?;
            return Err(e);
        }
    };
    let versions = Versions {
        operator_version: Some(info(&operator)),
        ..client_only
    };
    out(&render(&versions, args.output)?)?;
    if let Some(w) = skew_warning(CLIENT, &operator) {
        eprintln!("{w}");
    }
    Ok(0)
}

async fn operator_version(c: &Conn) -> Result<String> {
    let path = format!(
        "/apis/{}/{}",
        aexec_crds::SUBRESOURCE_GROUP,
        aexec_crds::VERSION
    );
    let what = "reading the operator's version";
    let doc: serde_json::Value = crate::commands::get_json(&c.client, &path, what).await?;
    from_discovery(&doc).ok_or_else(|| {
        Error::Api(format!(
            "{what}: the operator in this cluster does not publish its version (it is older than \
             this plugin's v{CLIENT}): upgrade the operator (its Helm chart)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_of_release_and_prerelease() {
        assert_eq!(major_minor("0.1.0"), Some((0, 1)));
        assert_eq!(major_minor("v1.22.3"), Some((1, 22)));
        assert_eq!(major_minor("2.3.0-rc.1"), Some((2, 3)));
        assert_eq!(major_minor("2.3-rc.1"), Some((2, 3)));
        assert_eq!(major_minor("garbage"), None);
        assert_eq!(major_minor("1"), None);
    }

    #[test]
    fn skew_is_minor_or_major_only_and_names_the_side_to_upgrade() {
        assert_eq!(skew_warning("0.1.0", "0.1.7"), None);
        assert_eq!(skew_warning("v0.1.0", "0.1.0"), None);
        let older_plugin = skew_warning("0.1.0", "0.2.0").expect("a skew");
        assert!(older_plugin.contains("(v0.1.0)") && older_plugin.contains("(v0.2.0)"));
        assert!(
            older_plugin.contains("upgrade the plugin"),
            "{older_plugin}"
        );
        let older_operator = skew_warning("1.0.0", "0.9.0").expect("a skew");
        assert!(
            older_operator.contains("upgrade the operator"),
            "{older_operator}"
        );
        // An unparseable version is not a skew anyone can act on.
        assert_eq!(skew_warning("0.1.0", "dev"), None);
    }

    #[test]
    fn discovery_key_is_read() {
        let doc = serde_json::json!({"kind": "APIResourceList", "aexecVersion": "0.3.1"});
        assert_eq!(from_discovery(&doc).as_deref(), Some("0.3.1"));
        assert_eq!(
            from_discovery(&serde_json::json!({"kind": "APIResourceList"})),
            None
        );
    }

    #[test]
    fn renders_text_json_yaml() {
        let v = Versions {
            client_version: info("0.1.0"),
            operator_version: Some(info("v0.2.0")),
        };
        assert_eq!(
            render(&v, None).expect("renders"),
            "Client Version: v0.1.0\nOperator Version: v0.2.0\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&v, Some(JsonOrYaml::Json)).expect("renders"))
                .expect("renders");
        assert_eq!(json["clientVersion"]["version"], "v0.1.0");
        assert_eq!(json["operatorVersion"]["version"], "v0.2.0");
        let yaml = render(&v, Some(JsonOrYaml::Yaml)).expect("renders");
        assert!(yaml.contains("operatorVersion:"), "{yaml}");
        let client_only = Versions {
            client_version: info("0.1.0"),
            operator_version: None,
        };
        let json = render(&client_only, Some(JsonOrYaml::Json)).expect("renders");
        assert!(!json.contains("operatorVersion"), "{json}");
    }
}
