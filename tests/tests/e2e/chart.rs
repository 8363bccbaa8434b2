//! The Helm chart (`charts/aexec-operator`): it lints and renders for the supported setups and
//! the API server accepts everything it renders; it installs on the local control plane (the
//! test environment itself is installed with it) and its APIService resolves to the operator
//! process; the operator's RBAC from the chart is enough for the whole story; the user roles grant
//! no exec; and leader election keeps the controller on one replica, failing over when it dies.

use std::time::{Duration, Instant};

use aexec_crds::Phase;
use aexec_operator::run::{Args, StorageKind};
use aexec_testenv::{
    Target, User,
    chart::{KUBE_VERSION, NAMESPACE, RELEASE, chart_dir},
    operator::{Replica, TLS_SECRET},
};
use clap::Parser;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Namespace, Pod, Secret},
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    broker::{attach, auto_policy, collect, final_session, recording, request},
    common::{env, kubectl},
};

/// The setups the chart is tested in: its defaults, and the values files under `ci/`.
const SETUPS: [(&str, Option<&str>); 3] = [
    ("default", None),
    ("s3", Some("ci/s3-values.yaml")),
    ("cert-manager", Some("ci/cert-manager-values.yaml")),
];

/// Runs helm and returns its output, failing the test with helm's messages if it fails.
async fn helm(args: &[&str]) -> String {
    let out = env().helm(args, None).await.expect("helm runs");
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// helm's error for `args`, which must fail.
async fn helm_error(args: &[&str]) -> String {
    let out = env().helm(args, None).await.expect("helm runs");
    assert!(!out.status.success(), "helm {args:?} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn chart() -> String {
    chart_dir().display().to_string()
}

fn values_args(values: Option<&str>) -> Vec<String> {
    values
        .map(|v| vec!["-f".to_owned(), chart_dir().join(v).display().to_string()])
        .unwrap_or_default()
}

/// `helm template` of the release into `namespace` (CRDs included), and its objects.
async fn render(namespace: &str, values: Option<&str>) -> (String, Vec<Value>) {
    let chart = chart();
    let mut args = vec![
        "template",
        RELEASE,
        &chart,
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        "--include-crds",
    ];
    let values = values_args(values);
    args.extend(values.iter().map(String::as_str));
    let yaml = helm(&args).await;
    let objects = objects(&yaml);
    (yaml, objects)
}

/// The objects of a multi-document YAML text.
fn objects(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    k.sort();
    k
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", kinds(objects)))
}

/// The operator container's arguments and environment variable names.
fn container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
}

/// The operator's arguments as rendered, parsed by the operator's own parser: every flag the
/// chart passes exists and has a valid value.
fn parse_args(objects: &[Value]) -> Args {
    let args: Vec<String> = container(objects)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect();
    Args::try_parse_from(std::iter::once("aexec-operator".to_owned()).chain(args))
        .unwrap_or_else(|e| panic!("the chart passes arguments the operator refuses: {e}"))
}

fn mount_paths(objects: &[Value]) -> Vec<String> {
    container(objects)["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A fresh namespace for the release, enforcing the restricted Pod Security Standard.
async fn restricted_namespace(admin: &Client) -> String {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"generateName": "aexec-chart-", "labels": {
            "aexec.dev/test": "true",
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest"}}
    }))
    .expect("namespace");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace")
        .name_any()
}

/// cert-manager's and prometheus-operator's kinds are not installed here: minimal CRDs let the
/// API server accept (and check the metadata of) the Issuer, Certificate and ServiceMonitor the
/// chart renders. Their specs are not validated: those schemas belong to the other projects.
fn third_party_crds() -> String {
    [
        ("cert-manager.io", "Certificate", "certificates"),
        ("cert-manager.io", "Issuer", "issuers"),
        ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    ]
    .map(|(group, kind, plural)| {
        let singular = kind.to_lowercase();
        format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: {kind}, plural: {plural}, singular: {singular}, listKind: {kind}List}}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {{openAPIV3Schema: {{type: object, properties: {{spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}}}}}
"#
        )
    })
    .join("---\n")
}

async fn install_third_party_crds(admin: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions};
    aexec_testenv::env::apply_yaml(admin, &third_party_crds())
        .await
        .expect("third-party CRDs");
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for name in [
        "certificates.cert-manager.io",
        "issuers.cert-manager.io",
        "servicemonitors.monitoring.coreos.com",
    ] {
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), name, conditions::is_crd_established()),
        )
        .await
        .expect("established in time")
        .expect("watch");
    }
}

/// Every object of `yaml`, server-side applied as a dry run: the API server validates each
/// against its schema (and admission) without storing anything.
async fn server_dry_run(yaml: &str, count: usize) {
    let out = kubectl(
        User::Admin,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(yaml.as_bytes()),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the API server refused rendered objects:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accepted = stdout
        .lines()
        .filter(|l| l.ends_with("serverside-applied (server dry run)"))
        .count();
    assert_eq!(accepted, count, "{stdout}");
}

/// The operator's ClusterRole, rule by rule: what the code uses and nothing more. A change here
/// is a change of the operator's privileges and must be deliberate.
fn expected_operator_rules() -> Value {
    json!([
        {"apiGroups": ["aexec.dev"], "resources": ["execsessions"], "verbs": ["get", "list", "watch", "patch", "delete"]},
        {"apiGroups": ["aexec.dev"], "resources": ["execsessions/status"], "verbs": ["patch", "update"]},
        {"apiGroups": ["aexec.dev"], "resources": ["execpolicies"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}
    ])
}

fn check_default(objects: &[Value], ns: &str) {
    assert_eq!(
        kinds(objects),
        [
            "APIService",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "Secret",
            "Secret",
            "Service",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    );
    // Two replicas kept apart, a disruption budget, probes on the operations port.
    let deploy = find(objects, "Deployment", RELEASE);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(deploy["spec"]["replicas"], 2);
    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["labelSelector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        find(objects, "PodDisruptionBudget", RELEASE)["spec"]["maxUnavailable"],
        1
    );
    let c = container(objects);
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "ops"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "ops"})
    );
    assert!(
        c["resources"]["requests"]["cpu"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );
    // Non-root, read-only root filesystem, no capabilities, the runtime's seccomp profile.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["serviceAccountName"], RELEASE);

    // The flags exist, and every path they name is on a mounted volume.
    let args = parse_args(objects);
    assert!(matches!(args.storage, StorageKind::Local));
    assert!(args.leader_elect);
    assert_eq!(args.leader_election_lease_duration, Duration::from_secs(15));
    let mounts = mount_paths(objects);
    for path in [
        args.recordings_dir.clone(),
        args.spool_dir.clone(),
        args.tls_cert_file.parent().expect("dir").to_path_buf(),
    ] {
        assert!(
            mounts.iter().any(|m| path.starts_with(m)),
            "{} is not on a volume ({mounts:?})",
            path.display()
        );
    }
    let env: Vec<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"));

    // Least privilege: the operator's rules exactly; the Lease only in its namespace; the
    // front-proxy CA through the built-in reader role; no auth-delegator (no TokenReviews).
    assert_eq!(
        find(objects, "ClusterRole", RELEASE)["rules"],
        expected_operator_rules()
    );
    let lease_role = find(objects, "Role", &format!("{RELEASE}-leader-election"));
    assert_eq!(lease_role["metadata"]["namespace"], ns);
    assert_eq!(
        lease_role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["aexec-operator"], "verbs": ["get", "patch"]}
        ])
    );
    // Session records: one Ed25519 key made by Helm (genPrivateKey), readable as the operator
    // reads it, kept on uninstall; the operator reads that Secret and patches the public keys'
    // ConfigMap, by name, and nothing else.
    let secret_name = format!("{RELEASE}-signing");
    let cm_name = format!("{RELEASE}-signing-keys");
    assert_eq!(args.signing_key_secret, secret_name);
    assert_eq!(args.signing_keys_configmap, cm_name);
    let secret = find(objects, "Secret", &secret_name);
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let data = secret["data"].as_object().expect("data");
    assert_eq!(data.keys().collect::<Vec<_>>(), ["signing-key-1.pem"]);
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data["signing-key-1.pem"].as_str().expect("b64"))
        .expect("base64");
    let key = aexec_recording::record::SigningKey::from_pkcs8_pem(
        std::str::from_utf8(&pem).expect("PEM text"),
    )
    .expect("Helm's genPrivateKey \"ed25519\" is a key the operator reads");
    assert_eq!(key.id().len(), 16);
    let cm = find(objects, "ConfigMap", &cm_name);
    assert_eq!(
        cm["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let signing_role = find(objects, "Role", &format!("{RELEASE}-signing"));
    assert_eq!(signing_role["metadata"]["namespace"], ns);
    assert_eq!(
        signing_role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret_name], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [cm_name], "verbs": ["get", "patch"]}
        ])
    );
    let reader = find(objects, "RoleBinding", &format!("{RELEASE}-auth-reader"));
    assert_eq!(reader["metadata"]["namespace"], "kube-system");
    assert_eq!(
        reader["roleRef"]["name"],
        "extension-apiserver-authentication-reader"
    );
    for o in objects
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| k.ends_with("Binding")))
    {
        assert_ne!(o["roleRef"]["name"], "system:auth-delegator");
        assert_ne!(o["roleRef"]["name"], "cluster-admin");
    }
    // The user roles: none grants exec, attach or a wildcard.
    for role in ["aexec-requester", "aexec-approver", "aexec-auditor"] {
        for rule in find(objects, "ClusterRole", role)["rules"]
            .as_array()
            .expect("rules")
        {
            let text = rule.to_string();
            for forbidden in ["pods/exec", "pods/attach", "\"*\""] {
                assert!(
                    !text.contains(forbidden),
                    "{role} grants {forbidden}: {text}"
                );
            }
        }
    }

    // The serving certificate: for the Service's DNS names, from the CA the APIService trusts.
    let secret = find(objects, "Secret", TLS_SECRET);
    let api = find(objects, "APIService", "v1alpha1.subresources.aexec.dev");
    assert_eq!(api["spec"]["caBundle"], secret["data"]["ca.crt"]);
    assert_eq!(
        api["spec"]["service"],
        json!({"name": RELEASE, "namespace": ns, "port": 443})
    );
    let pem = |field: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"][field].as_str().expect("base64"))
            .expect("base64")
    };
    let (crt, ca) = (pem("tls.crt"), pem("ca.crt"));
    let (_, crt) = x509_parser::pem::parse_x509_pem(&crt).expect("tls.crt is PEM");
    let (_, ca) = x509_parser::pem::parse_x509_pem(&ca).expect("ca.crt is PEM");
    let (crt, ca) = (
        crt.parse_x509().expect("tls.crt"),
        ca.parse_x509().expect("ca.crt"),
    );
    assert_eq!(crt.issuer(), ca.subject());
    assert!(ca.is_ca());
    let sans: Vec<String> = crt
        .subject_alternative_name()
        .expect("SAN")
        .expect("SAN present")
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    for want in [
        format!("DNSName({RELEASE}.{ns}.svc)"),
        format!("DNSName({RELEASE}.{ns}.svc.cluster.local)"),
    ] {
        assert!(sans.contains(&want), "{want} not in {sans:?}");
    }
}

fn check_s3(objects: &[Value]) {
    let args = parse_args(objects);
    assert!(matches!(args.storage, StorageKind::S3));
    assert_eq!(args.s3_bucket, "aexec-recordings");
    assert_eq!(args.s3_prefix, "prod/");
    assert_eq!(
        args.s3_endpoint.as_deref(),
        Some("https://minio.storage.svc:9000")
    );
    assert_eq!(args.s3_region.as_deref(), Some("us-east-1"));
    assert!(args.s3_force_path_style);
    assert_eq!(
        args.s3_object_lock_mode,
        Some(aexec_operator::record::storage::ObjectLock::Governance)
    );
    assert_eq!(args.s3_object_lock_days, Some(365));
    assert_eq!(args.spool_max_bytes, 1 << 30);
    // Static credentials come from the named Secret; no recordings volume or claim.
    let env = container(objects)["env"].as_array().expect("env").clone();
    for (var, key) in [
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ] {
        let e = env.iter().find(|e| e["name"] == var).expect(var);
        assert_eq!(
            e["valueFrom"]["secretKeyRef"],
            json!({"name": "aexec-s3", "key": key})
        );
    }
    assert!(!kinds(objects).contains(&"PersistentVolumeClaim".to_owned()));
    assert!(
        !mount_paths(objects)
            .iter()
            .any(|m| m.ends_with("recordings"))
    );
    // Notifications: the Secret's webhooks.yaml, mounted read-only where the flag points.
    assert_eq!(
        args.notifications.as_deref(),
        Some(std::path::Path::new(
            "/etc/aexec/notifications/webhooks.yaml"
        ))
    );
    let mount = container(objects)["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/etc/aexec/notifications")
        .cloned()
        .expect("the notifications mount");
    assert_eq!(mount["readOnly"], true, "{mount}");
    let volume = find(objects, "Deployment", RELEASE)["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .cloned()
        .expect("the notifications volume");
    assert_eq!(volume["secret"]["secretName"], "aexec-webhooks");
    let pod = &find(objects, "Deployment", RELEASE)["spec"]["template"]["spec"];
    assert!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_array()
    );
    // The default ExecPolicies, with the chart's labels and their own.
    let prod = find(objects, "ExecPolicy", "prod-shell");
    assert_eq!(prod["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        prod["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(prod["spec"]["approval"]["required"], 2);
    assert_eq!(
        find(objects, "ExecPolicy", "dev-auto")["spec"]["decision"],
        "AutoApprove"
    );
}

fn check_cert_manager(objects: &[Value], ns: &str) {
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == TLS_SECRET),
        "cert-manager writes the serving certificate's Secret"
    );
    let cert = find(objects, "Certificate", &format!("{RELEASE}-serving"));
    assert_eq!(cert["spec"]["secretName"], TLS_SECRET);
    assert_eq!(
        cert["spec"]["dnsNames"],
        json!([
            format!("{RELEASE}.{ns}.svc"),
            format!("{RELEASE}.{ns}.svc.cluster.local")
        ])
    );
    let issuer = find(objects, "Issuer", &format!("{RELEASE}-selfsigned"));
    assert_eq!(issuer["spec"], json!({"selfSigned": {}}));
    assert_eq!(
        cert["spec"]["issuerRef"]["name"],
        issuer["metadata"]["name"]
    );
    // The cainjector fills the caBundle from the Certificate.
    let api = find(objects, "APIService", "v1alpha1.subresources.aexec.dev");
    assert_eq!(
        api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{ns}/{RELEASE}-serving")
    );
    assert!(api["spec"].get("caBundle").is_none());
    // The ServiceMonitor selects the metrics Service and names its port.
    let sm = find(objects, "ServiceMonitor", RELEASE);
    let svc = find(objects, "Service", &format!("{RELEASE}-metrics"));
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("labels")
    {
        assert_eq!(&svc["metadata"]["labels"][k], v, "{k}");
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    // Workload identity: the ServiceAccount carries the role; no static credentials.
    assert_eq!(
        find(objects, "ServiceAccount", RELEASE)["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/aexec-recordings"
    );
    assert!(
        !container(objects)["env"]
            .to_string()
            .contains("AWS_ACCESS_KEY_ID"),
        "no static credentials"
    );
    assert_eq!(find(objects, "Deployment", RELEASE)["spec"]["replicas"], 3);
    assert!(matches!(parse_args(objects).storage, StorageKind::S3));
}

#[tokio::test]
async fn chart_lints_and_renders() {
    let env = env();
    // kubectl's discovery wants every APIService answering: keep the operator up.
    let _op = env.operator().await.expect("operator");
    let admin = env.client(User::Admin).await.expect("admin");
    install_third_party_crds(&admin).await;
    let ns = restricted_namespace(&admin).await;
    let chart = chart();

    for (setup, values) in SETUPS {
        let mut lint = vec!["lint", "--strict", &chart, "--kube-version", KUBE_VERSION];
        let v = values_args(values);
        lint.extend(v.iter().map(String::as_str));
        let out = helm(&lint).await;
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{setup}: {out}"
        );
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "{setup}: {out}"
        );

        let (yaml, objects) = render(&ns, values).await;
        match setup {
            "default" => check_default(&objects, &ns),
            "s3" => check_s3(&objects),
            _ => check_cert_manager(&objects, &ns),
        }
        server_dry_run(&yaml, objects.len()).await;
    }

    // The pod the Deployment makes passes the restricted Pod Security Standard, which the
    // namespace enforces; the same pod without its seccomp profile does not (the check bites).
    let (_, objects) = render(&ns, None).await;
    let template = &find(&objects, "Deployment", RELEASE)["spec"]["template"];
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "aexec-operator-psa", "labels": template["metadata"]["labels"]},
        "spec": template["spec"]});
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let p: Pod = serde_json::from_value(pod.clone()).expect("pod");
    pods.create(&dry, &p)
        .await
        .expect("the operator's pod meets the restricted Pod Security Standard");
    pod["spec"]["securityContext"]
        .as_object_mut()
        .expect("pod security context")
        .remove("seccompProfile");
    let p: Pod = serde_json::from_value(pod).expect("pod");
    match pods.create(&dry, &p).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message.contains("restricted") && s.message.contains("seccompProfile"),
                "{}",
                s.message
            );
        }
        other => {
            panic!("a pod without seccomp must be refused in a restricted namespace: {other:?}")
        }
    }

    // Bad values fail the install with what to change.
    let template = |set: &'static str| {
        let chart = chart.clone();
        async move {
            helm_error(&[
                "template",
                RELEASE,
                &chart,
                "--kube-version",
                KUBE_VERSION,
                "--set",
                set,
            ])
            .await
        }
    };
    let e = template("storage.type=gcs").await;
    assert!(
        e.contains("/storage/type") && e.contains("'local', 's3'"),
        "{e}"
    );
    let e = template("storage.type=s3").await;
    assert!(e.contains("storage.type=s3 needs storage.s3.bucket"), "{e}");
    let e = template("leaderElection.enabled=false").await;
    assert!(
        e.contains("replicaCount > 1 needs leaderElection.enabled=true"),
        "{e}"
    );
    let e = template("storage.local.persistence.accessModes={ReadWriteOnce}").await;
    assert!(
        e.contains("needs storage.local.persistence.accessModes to include ReadWriteMany"),
        "{e}"
    );
    let e = template("replicas=3").await;
    assert!(
        e.contains("additional properties 'replicas' not allowed"),
        "{e}"
    );
}

/// The chart's Secret in the release namespace: (tls.crt, ca.crt).
async fn chart_certificate(admin: &Client) -> (Vec<u8>, Vec<u8>) {
    let s = Api::<Secret>::namespaced(admin.clone(), NAMESPACE)
        .get(TLS_SECRET)
        .await
        .expect("the chart's Secret");
    let data = s.data.expect("data");
    (data["tls.crt"].0.clone(), data["ca.crt"].0.clone())
}

async fn apiservice(admin: &Client) -> Value {
    let req = http::Request::get(
        "/apis/apiregistration.k8s.io/v1/apiservices/v1alpha1.subresources.aexec.dev",
    )
    .body(Vec::new())
    .expect("request");
    admin.request::<Value>(req).await.expect("APIService")
}

fn available(api: &Value) -> bool {
    api["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True")
    })
}

/// The discovery document of subresources.aexec.dev, through the aggregation layer: the API
/// server proxies it to the operator.
async fn aggregated_discovery() -> Vec<String> {
    let out = kubectl(
        User::Alice,
        &["get", "--raw", "/apis/subresources.aexec.dev/v1alpha1"],
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("APIResourceList");
    list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn chart_installs_on_local_control_plane() {
    let env = env();
    // The environment was installed with `helm install` of the chart; the operator process
    // runs with the chart's ServiceAccount and certificate.
    let _op = env.operator().await.expect("operator");
    let admin = env.client(User::Admin).await.expect("admin");
    let status: Value =
        serde_json::from_str(&helm(&["status", RELEASE, "-n", NAMESPACE, "-o", "json"]).await)
            .expect("status json");
    assert_eq!(status["info"]["status"], "deployed");
    let revision = status["version"].as_i64().expect("revision");

    // Every object of the release is in the cluster, and the CRDs from crds/ are established.
    let manifest = helm(&["get", "manifest", RELEASE, "-n", NAMESPACE]).await;
    let count = objects(&manifest).len();
    let got = kubectl(
        User::Admin,
        &["get", "-f", "-", "-o", "name"],
        Some(manifest.as_bytes()),
    )
    .await;
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout).lines().count(), count);
    for crd in ["execsessions.aexec.dev", "execpolicies.aexec.dev"] {
        let out = kubectl(
            User::Admin,
            &[
                "get",
                "crd",
                crd,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ],
            None,
        )
        .await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "True", "{crd}");
    }

    // The APIService is the chart's, points at the chart's Service, trusts the chart's CA, and
    // is Available: the API server reached the operator process and verified its certificate.
    let (crt, ca) = chart_certificate(&admin).await;
    let api = apiservice(&admin).await;
    assert_eq!(
        api["metadata"]["annotations"]["meta.helm.sh/release-name"],
        RELEASE
    );
    assert_eq!(
        api["spec"]["service"],
        json!({"name": RELEASE, "namespace": NAMESPACE, "port": 443})
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(api["spec"]["caBundle"], b64.encode(&ca));
    assert!(available(&api), "{}", api["status"]);
    assert!(
        aggregated_discovery()
            .await
            .contains(&"execsessions/approve".to_owned())
    );

    // The process at the operator's address presents the chart's certificate: a TLS client
    // that trusts only the chart's CA and checks the Service's name completes the handshake
    // (and, having no front-proxy certificate, is refused with a Status).
    let (_, ca_der) = x509_parser::pem::parse_x509_pem(&ca).expect("CA PEM");
    let mut config = kube::Config::new(
        format!(
            "https://{}:{}",
            aexec_testenv::netns::OPERATOR_IP,
            aexec_testenv::operator::API_PORT
        )
        .parse()
        .expect("url"),
    );
    config.root_cert = Some(vec![ca_der.contents]);
    config.tls_server_name = Some(format!("{RELEASE}.{NAMESPACE}.svc"));
    let direct = Client::try_from(config).expect("client");
    assert_refused_directly(
        &direct,
        "the operator over TLS verified with the chart's CA",
    )
    .await;

    // An upgrade keeps the certificate (the chart looks the Secret up) and the trust with it.
    let chart = chart();
    helm(&[
        "upgrade",
        RELEASE,
        &chart,
        "-n",
        NAMESPACE,
        "--reuse-values",
    ])
    .await;
    let status: Value =
        serde_json::from_str(&helm(&["status", RELEASE, "-n", NAMESPACE, "-o", "json"]).await)
            .expect("status json");
    assert_eq!(status["info"]["status"], "deployed");
    assert_eq!(status["version"].as_i64(), Some(revision + 1));
    assert_eq!(chart_certificate(&admin).await, (crt, ca.clone()));
    let api = apiservice(&admin).await;
    assert_eq!(api["spec"]["caBundle"], b64.encode(&ca));
    assert!(available(&api), "{}", api["status"]);
    assert!(
        aggregated_discovery()
            .await
            .contains(&"execsessions/attach".to_owned())
    );
}

/// A request straight to an operator's aggregated API, without the API server's front-proxy
/// certificate: the operator answers it, refusing it with a 401 Status.
async fn assert_refused_directly(direct: &Client, who: &str) {
    let req = http::Request::put(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/default/execsessions/s1/approve",
    )
    .header("content-type", "application/json")
    .body(b"{}".to_vec())
    .expect("request");
    match direct.request_text(req).await {
        Err(kube::Error::Api(s)) => assert_eq!(
            (s.code, s.reason.as_str()),
            (401, "Unauthorized"),
            "{who}: {s:?}"
        ),
        other => panic!("{who}: expected the operator's 401 Status, got {other:?}"),
    }
}

/// `kubectl` with the operator's own kubeconfig (the chart ServiceAccount's token).
async fn kubectl_as_operator(args: &[&str]) -> std::process::Output {
    let kc = env()
        .operator_kubeconfig()
        .await
        .expect("operator kubeconfig");
    let mut full = vec!["--kubeconfig", kc.to_str().expect("path")];
    full.extend(args);
    tokio::process::Command::new(&env().upstream.kubectl)
        .args(&full)
        .output()
        .await
        .expect("kubectl runs")
}

/// `kubectl auth can-i` as the operator; `what` is `RESOURCE[/NAME][#SUBRESOURCE]`.
async fn operator_can(verb: &str, what: &str, ns: &str) -> bool {
    let (what, sub) = what.split_once('#').unwrap_or((what, ""));
    let sub = format!("--subresource={sub}");
    let mut args = vec!["auth", "can-i", verb, what, "-n", ns];
    if sub.len() > "--subresource=".len() {
        args.push(&sub);
    }
    let out = kubectl_as_operator(&args).await;
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// PUT approve as `user`.
async fn approve(user: User, t: &Target, name: &str) {
    let client = env().client(user).await.expect("client");
    let req = http::Request::put(format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/{name}/approve",
        t.namespace
    ))
    .header("content-type", "application/json")
    .body(br#"{"comment": "looks fine"}"#.to_vec())
    .expect("request");
    client
        .request::<Value>(req)
        .await
        .unwrap_or_else(|e| panic!("{user:?} approves: {e:?}"));
}

#[tokio::test]
async fn operator_runs_with_chart_rbac() {
    let env = env();
    let _op = env.operator().await.expect("operator");
    let admin = env.client(User::Admin).await.expect("admin");
    let t = env.target(&admin).await.expect("target");

    // The shared operator authenticates as the chart's ServiceAccount, which holds what the
    // chart grants and nothing broader.
    let who = kubectl_as_operator(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])
    .await;
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        format!("system:serviceaccount:{NAMESPACE}:{RELEASE}")
    );
    let ns = t.namespace.as_str();
    for (verb, what, where_) in [
        ("create", "pods#exec", ns),
        ("get", "pods#exec", ns),
        // Debug sessions: the approved ephemeral container, then the attach to it.
        ("patch", "pods#ephemeralcontainers", ns),
        ("create", "pods#attach", ns),
        ("watch", "pods", ns),
        ("delete", "execsessions.aexec.dev", ns),
        ("patch", "execsessions.aexec.dev", ns),
        ("update", "execsessions.aexec.dev#status", ns),
        ("patch", "execsessions.aexec.dev#status", ns),
        ("create", "subjectaccessreviews.authorization.k8s.io", ns),
        (
            "get",
            "configmaps/extension-apiserver-authentication",
            "kube-system",
        ),
        (
            "patch",
            "leases.coordination.k8s.io/aexec-operator",
            NAMESPACE,
        ),
        ("get", "secrets/aexec-operator-signing", NAMESPACE),
        ("patch", "configmaps/aexec-operator-signing-keys", NAMESPACE),
    ] {
        assert!(
            operator_can(verb, what, where_).await,
            "the operator may {verb} {what} in {where_}"
        );
    }
    for (verb, what, where_) in [
        ("create", "pods", ns),
        ("delete", "pods", ns),
        ("update", "pods#ephemeralcontainers", ns),
        ("create", "pods#portforward", ns),
        ("get", "secrets", NAMESPACE),
        ("get", "secrets/aexec-operator-tls", NAMESPACE),
        ("patch", "configmaps", NAMESPACE),
        ("create", "execsessions.aexec.dev", ns),
        ("update", "execsessions.aexec.dev", ns),
        ("create", "execpolicies.aexec.dev", ns),
        ("list", "configmaps", "kube-system"),
        (
            "patch",
            "leases.coordination.k8s.io/kube-scheduler",
            "kube-system",
        ),
        ("create", "tokenreviews.authentication.k8s.io", ns),
    ] {
        assert!(
            !operator_can(verb, what, where_).await,
            "the operator must not {verb} {what} in {where_}"
        );
    }

    // The whole story with that identity: alice asks, bob approves, alice's command runs
    // through the broker, the recording is stored and carol replays it.
    let policy: aexec_crds::ExecPolicy = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecPolicy",
        "metadata": {"name": format!("{ns}-approval")},
        "spec": {"decision": "RequireApproval", "approval": {"required": 1, "groups": ["sre"]},
                 "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
    }))
    .expect("policy");
    Api::<aexec_crds::ExecPolicy>::all(admin.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy");
    request(&t, &["sh", "-c", "echo chart-rbac-$((6*7))"], false, false).await;
    // Evaluated (a status, waiting for an approval) before bob approves.
    let evaluated = |s: Option<&aexec_crds::ExecSession>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.phase == Some(Phase::Pending) && st.required_approvals.is_some())
    };
    let sessions: Api<aexec_crds::ExecSession> = Api::namespaced(admin.clone(), ns);
    tokio::time::timeout(
        Duration::from_secs(20),
        kube::runtime::wait::await_condition(sessions, "s1", evaluated),
    )
    .await
    .expect("evaluated in time")
    .expect("watch");
    approve(User::Bob, &t, "s1").await;
    final_session(&t, Phase::Approved).await;
    let mut ws = attach(User::Alice, &t).await.expect("alice attaches");
    let (out, _, status) = collect(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&out), "chart-rbac-42\n");
    assert_eq!(status["status"], "Success");
    let s = final_session(&t, Phase::Succeeded).await;
    assert!(
        s.status
            .and_then(|s| s.recording)
            .is_some_and(|r| r.sha256.is_some_and(|h| !h.is_empty()))
    );
    let text = recording(User::Carol, &t, "text")
        .await
        .expect("carol replays");
    assert!(String::from_utf8_lossy(&text).contains("chart-rbac-42"));

    // The operator's Events were written (events.k8s.io create) by the shared operator.
    assert_eq!(
        reporters(&t, &admin).await,
        [aexec_testenv::operator::INSTANCE]
    );
}

#[tokio::test]
async fn aexec_requester_cannot_exec_into_pods_directly() {
    let env = env();
    let admin = env.client(User::Admin).await.expect("admin");
    let t = env.target(&admin).await.expect("target");
    let ns = t.namespace.as_str();
    // erin, frank and grace hold one product role each, in this namespace, and nothing else.
    for (user, role) in [
        ("erin", "aexec-requester"),
        ("frank", "aexec-approver"),
        ("grace", "aexec-auditor"),
    ] {
        let out = kubectl(
            User::Admin,
            &[
                "create",
                "rolebinding",
                user,
                "-n",
                ns,
                "--clusterrole",
                role,
                "--user",
                user,
            ],
            None,
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let can = |verb: &'static str, what: &'static str| {
            let user = user.to_owned();
            async move {
                let (what, sub) = what.split_once('#').unwrap_or((what, ""));
                let sub = format!("--subresource={sub}");
                let mut args = vec!["auth", "can-i", verb, what, "-n", ns, "--as", &user];
                if sub.len() > "--subresource=".len() {
                    args.push(&sub);
                }
                let out = kubectl(User::Admin, &args, None).await;
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
        };
        assert_eq!(can("create", "pods#exec").await, "no", "{role}");
        assert_eq!(can("get", "pods#exec").await, "no", "{role}");
        assert_eq!(can("create", "pods#attach").await, "no", "{role}");
        if role == "aexec-requester" {
            // The role works for what it is for, and erases nothing.
            assert_eq!(can("create", "execsessions.aexec.dev").await, "yes");
            assert_eq!(can("delete", "execsessions.aexec.dev").await, "no");
            assert_eq!(can("patch", "execsessions.aexec.dev").await, "no");
        }
        // The aggregated API's resources are not in kubectl's discovery as top-level
        // resources: asked with SubjectAccessReviews, as the API server and the operator ask.
        let sar = |verb: &'static str, resource: &'static str, sub: Option<&'static str>| {
            aggregated_allowed(user, verb, resource, sub, ns)
        };
        assert_eq!(
            sar("update", "execsessions", Some("withdraw")).await,
            role == "aexec-requester",
            "{role} withdraw"
        );
        let auditor = role == "aexec-auditor";
        assert_eq!(sar("list", "recordings", None).await, auditor, "{role}");
        assert_eq!(
            sar("get", "recordings", Some("content")).await,
            auditor,
            "{role}"
        );
        assert_eq!(sar("list", "signingkeys", None).await, auditor, "{role}");
    }
    // kubectl exec as the requester is refused by the API server.
    let out = kubectl(
        User::Admin,
        &["exec", "-n", ns, &t.pod, "--as", "erin", "--", "id"],
        None,
    )
    .await;
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Forbidden") || stderr.contains("forbidden"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"erin\"") && stderr.contains("pods/exec"),
        "{stderr}"
    );
}

/// Whether `user` may `verb` `resource[/sub]` of `subresources.aexec.dev` in `ns`, per a
/// SubjectAccessReview (the check the API server makes before proxying to the operator).
async fn aggregated_allowed(
    user: &str,
    verb: &str,
    resource: &str,
    sub: Option<&str>,
    ns: &str,
) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let admin = env().client(User::Admin).await.expect("admin");
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            resource_attributes: Some(ResourceAttributes {
                group: Some("subresources.aexec.dev".into()),
                resource: Some(resource.into()),
                subresource: sub.map(Into::into),
                namespace: Some(ns.into()),
                verb: Some(verb.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(admin)
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// The Lease's holder, if any.
async fn lease_holder(admin: &Client) -> Option<String> {
    Api::<Lease>::namespaced(admin.clone(), NAMESPACE)
        .get_opt(aexec_operator::control::leader::LEASE_NAME)
        .await
        .expect("lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// The replicas that reported the session's Events (events.k8s.io `reportingInstance`), once
/// there is one: the Event follows the status write.
async fn reporters(t: &Target, admin: &Client) -> Vec<String> {
    let lp = ListParams::default().fields("regarding.name=s1");
    let events: Api<Event> = Api::namespaced(admin.clone(), &t.namespace);
    for _ in 0..100 {
        let mut r: Vec<String> = events
            .list(&lp)
            .await
            .expect("events")
            .items
            .into_iter()
            .filter_map(|e| e.reporting_instance)
            .collect();
        if !r.is_empty() {
            r.sort();
            r.dedup();
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no Event for s1 in {} within 10s", t.namespace)
}

/// Sessions this replica moved into `phase`, from its metrics.
async fn transitions(replica: &Replica, phase: &str) -> u64 {
    let (_, metrics) = replica.ops_get("/metrics").await.expect("metrics");
    let prefix = format!("aexec_session_transitions_total{{phase=\"{phase}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|n| n.parse().expect("count"))
        .unwrap_or(0)
}

async fn wait_until(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} within {secs}s")
}

/// An auto-approved session `s1` in a fresh namespace; returns it once Approved.
async fn decided_session(admin: &Client) -> Target {
    let t = env().target(admin).await.expect("target");
    auto_policy(&t, json!({})).await;
    request(&t, &["true"], false, false).await;
    final_session(&t, Phase::Approved).await;
    t
}

#[tokio::test]
async fn leader_election_keeps_one_deciding_replica_and_fails_over() {
    let env = env();
    let _op = env.operator_exclusive().await.expect("operator");
    let admin = env.client(User::Admin).await.expect("admin");
    // Stopped as Kubernetes stops a pod, the shared operator gives its lease up.
    env.stop_operator()
        .await
        .expect("the shared operator stops on SIGTERM");
    assert_eq!(lease_holder(&admin).await, None, "the lease was released");

    // Two replicas as the chart runs them (its ServiceAccount, its certificate).
    let lease = Duration::from_secs(5);
    let replicas = [
        Replica::new("aexec-operator-a", 18443, 18080, lease),
        Replica::new("aexec-operator-b", 28443, 28080, lease),
    ];
    let mut procs = Vec::new();
    for r in &replicas {
        procs.push(Some(env.spawn_operator(r).await.expect("replica starts")));
    }
    wait_until("a replica leads", 20, async || {
        replicas[0].leads().await || replicas[1].leads().await
    })
    .await;
    let holder = lease_holder(&admin).await.expect("the lease is held");
    let (l, s) = if holder == replicas[0].instance {
        (0, 1)
    } else {
        (1, 0)
    };
    let (leader, standby) = (&replicas[l], &replicas[s]);
    assert_eq!(holder, leader.instance);
    assert!(!standby.leads().await, "only one replica leads");
    // The standby serves too: ready, and its aggregated API answers (a direct call without
    // the front-proxy certificate is refused with a Status, as on the leader).
    assert_eq!(standby.ops_get("/readyz").await.map(|r| r.0), Some(200));
    for r in &replicas {
        let mut config = kube::Config::new(format!("https://{}", r.api).parse().expect("url"));
        config.accept_invalid_certs = true;
        let direct = Client::try_from(config).expect("client");
        assert_refused_directly(&direct, &r.instance).await;
    }

    // Only the leader decides.
    let t1 = decided_session(&admin).await;
    assert_eq!(
        reporters(&t1, &admin).await,
        std::slice::from_ref(&leader.instance)
    );
    assert!(transitions(leader, "Approved").await >= 1);
    assert_eq!(transitions(standby, "Approved").await, 0);

    // The leader dies without a word: the standby takes over once the lease runs out, and
    // decides new sessions.
    if let Some(mut p) = procs[l].take() {
        p.kill();
    }
    let took = wait_until("the standby takes over", 20, async || standby.leads().await).await;
    assert_eq!(
        lease_holder(&admin).await.as_deref(),
        Some(standby.instance.as_str())
    );
    assert!(took <= lease + Duration::from_secs(5), "took {took:?}");
    let t2 = decided_session(&admin).await;
    assert_eq!(
        reporters(&t2, &admin).await,
        std::slice::from_ref(&standby.instance)
    );
    assert!(transitions(standby, "Approved").await >= 1);

    // Stopped cleanly, it releases the lease; the shared operator leads again at once.
    if let Some(mut p) = procs[s].take() {
        p.terminate(Duration::from_secs(20))
            .await
            .expect("the replica stops on SIGTERM");
    }
    assert_eq!(lease_holder(&admin).await, None);
    env.ensure_operator().await.expect("shared operator back");
    assert_eq!(
        lease_holder(&admin).await.as_deref(),
        Some(aexec_testenv::operator::INSTANCE)
    );
}
