//! The keys that sign session records, and where their public halves are published.
//!
//! The private keys live in a Secret the chart creates (`<release>-signing`), one Ed25519 key
//! per data entry named `signing-key-<N>.pem` (PKCS#8 PEM). The key with the highest `N` signs;
//! every key's public half is published, so records signed before a rotation still verify. The
//! Secret is read each time a record is signed (once per session end, on the leader), so a
//! rotation takes effect without a restart.
//!
//! Public keys are published in a ConfigMap (`<release>-signing-keys`, one `<key id>.pem` entry
//! per key, only ever added to: a private key removed from the Secret keeps its public key
//! there) and served by the aggregated API (`signingkeys`), so auditors fetch them without any
//! access to the Secret, and can pin them offline (`kubectl aexec keys > keys.pem`).

use std::collections::{BTreeMap, BTreeSet};

use aexec_recording::record::{KeyRing, PublicKey, SigningKey};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

/// Data entries of the Secret: `signing-key-<N>.pem`.
pub const KEY_PREFIX: &str = "signing-key-";
pub const KEY_SUFFIX: &str = ".pem";

/// Why records cannot be signed, or keys not published.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(
        "reading the signing key Secret {namespace}/{name}: {source} (the chart creates it; the operator needs get on it)"
    )]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the signing key Secret {namespace}/{name} does not exist: install the chart (it creates it), or create it with a key named signing-key-1.pem (openssl genpkey -algorithm ed25519)"
    )]
    Missing { namespace: String, name: String },
    #[error("the signing key Secret {secret}: {message}")]
    Invalid { secret: String, message: String },
    #[error("publishing the public keys in the ConfigMap {namespace}/{name}: {source}")]
    Publish {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The keys of the Secret.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The newest key: it signs.
    pub signing: SigningKey,
    /// Every key's public half.
    pub ring: KeyRing,
}

/// The keys in a Secret's data (pure). Entries must be named `signing-key-<N>.pem` with `N` a
/// whole number from 1; the highest `N` signs.
pub fn parse_keys(secret: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Keys, SigningError> {
    let invalid = |message: String| SigningError::Invalid {
        secret: secret.to_owned(),
        message,
    };
    let mut numbered: Vec<(u32, SigningKey)> = Vec::new();
    for (name, bytes) in data {
        let n = name
            .strip_prefix(KEY_PREFIX)
            .and_then(|r| r.strip_suffix(KEY_SUFFIX))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                invalid(format!(
                    "unexpected entry {name:?}: name the keys signing-key-1.pem, signing-key-2.pem, ... (the highest number signs)"
                ))
            })?;
        let pem =
            std::str::from_utf8(bytes).map_err(|_| invalid(format!("{name} is not PEM text")))?;
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| invalid(format!("{name}: {e}")))?;
        numbered.push((n, key));
    }
    numbered.sort_by_key(|(n, _)| *n);
    let ring = KeyRing::new(numbered.iter().map(|(_, k)| k.public()).collect());
    let (_, signing) = numbered
        .pop()
        .ok_or_else(|| invalid("it holds no key (expected signing-key-1.pem, ...)".to_owned()))?;
    Ok(Keys { signing, ring })
}

/// Reads the keys from the cluster and publishes their public halves.
#[derive(Clone)]
pub struct Signer {
    client: Client,
    namespace: String,
    secret: String,
    configmap: Option<String>,
    published: std::sync::Arc<std::sync::Mutex<BTreeSet<String>>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("namespace", &self.namespace)
            .field("secret", &self.secret)
            .field("configmap", &self.configmap)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// `secret` and `configmap` in `namespace` (the operator's).
    pub fn new(client: Client, namespace: &str, secret: &str, configmap: Option<&str>) -> Self {
        Signer {
            client,
            namespace: namespace.to_owned(),
            secret: secret.to_owned(),
            configmap: configmap.map(str::to_owned),
            published: Default::default(),
        }
    }

    /// The keys as the Secret holds them now.
    pub async fn keys(&self) -> Result<Keys, SigningError> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&self.secret)
            .await
            .map_err(|source| SigningError::Read {
                namespace: self.namespace.clone(),
                name: self.secret.clone(),
                source,
            })?
            .ok_or_else(|| SigningError::Missing {
                namespace: self.namespace.clone(),
                name: self.secret.clone(),
            })?;
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        parse_keys(&format!("{}/{}", self.namespace, self.secret), &data)
    }

    /// Adds the public keys of `ring` not yet published to the ConfigMap (a merge patch: keys
    /// already there, retired ones included, stay). Without a ConfigMap configured, nothing.
    pub async fn publish(&self, ring: &KeyRing) -> Result<(), SigningError> {
        let Some(name) = &self.configmap else {
            return Ok(());
        };
        let missing: BTreeMap<String, String> = {
            let done = self.published.lock().map(|p| p.clone()).unwrap_or_default();
            ring.keys()
                .iter()
                .filter(|k| !done.contains(k.id()))
                .map(|k| (format!("{}.pem", k.id()), k.to_pem()))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "data": missing })),
            )
            .await
            .map_err(|source| SigningError::Publish {
                namespace: self.namespace.clone(),
                name: name.clone(),
                source,
            })?;
        if let Ok(mut p) = self.published.lock() {
            p.extend(ring.keys().iter().map(|k| k.id().to_owned()));
        }
        Ok(())
    }

    /// Every public key that verifies records: the Secret's and the ConfigMap's (which keeps
    /// retired keys). A ConfigMap that cannot be read adds nothing.
    pub async fn public_keys(&self) -> Result<KeyRing, SigningError> {
        let mut ring = self.keys().await?.ring;
        if let Some(name) = &self.configmap
            && let Ok(Some(cm)) = Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
                .get_opt(name)
                .await
        {
            for (entry, pem) in cm.data.unwrap_or_default() {
                match PublicKey::from_pem(&pem) {
                    Ok(k) => ring.add(k),
                    Err(e) => {
                        tracing::warn!(configmap = %name, %entry, error = %e, "a published public key is unreadable")
                    }
                }
            }
        }
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PKCS#8 PEM of the key with this seed.
    fn pem(seed: u8) -> Vec<u8> {
        use aexec_recording::record::ed25519_dalek::{self, pkcs8::EncodePrivateKey as _};
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("pem")
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn the_highest_number_signs_and_every_key_is_published() {
        let data = BTreeMap::from([
            ("signing-key-2.pem".to_owned(), pem(2)),
            ("signing-key-10.pem".to_owned(), pem(10)),
            ("signing-key-1.pem".to_owned(), pem(1)),
        ]);
        let keys = parse_keys("ns/s", &data).expect("keys");
        let newest =
            SigningKey::from_pkcs8_pem(std::str::from_utf8(&pem(10)).expect("utf8")).expect("key");
        assert_eq!(keys.signing.id(), newest.id());
        assert_eq!(keys.ring.keys().len(), 3);
    }

    #[test]
    fn bad_secrets_say_what_to_fix() {
        let e = parse_keys("ns/s", &BTreeMap::new()).expect_err("empty");
        assert!(e.to_string().contains("holds no key"), "{e}");
        let e = parse_keys("ns/s", &BTreeMap::from([("key.pem".to_owned(), pem(1))]))
            .expect_err("name");
        assert!(
            e.to_string()
                .contains("signing-key-1.pem, signing-key-2.pem"),
            "{e}"
        );
        let e = parse_keys(
            "ns/s",
            &BTreeMap::from([("signing-key-0.pem".to_owned(), pem(1))]),
        )
        .expect_err("zero");
        assert!(e.to_string().contains("unexpected entry"), "{e}");
        let e = parse_keys(
            "ns/s",
            &BTreeMap::from([("signing-key-1.pem".to_owned(), b"junk".to_vec())]),
        )
        .expect_err("junk");
        assert!(
            e.to_string().starts_with(
                "the signing key Secret ns/s: signing-key-1.pem: not an Ed25519 private key"
            ),
            "{e}"
        );
    }
}
