//! The operator as a real process behind a real APIService: policies, approvals and the
//! session lifecycle, as alice (requester), bob and dave (approvers), carol (auditor) and
//! mallory (nobody) live them.

use std::time::Duration;

use aexec_crds::{ExecPolicy, ExecSession, Phase};
use aexec_testenv::{Target, User};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use serde_json::json;

use crate::common::{
    env, policy, replace_pod, target_with_operator, target_with_operator_exclusive, wait_phase,
};

/// alice asks for `command` in the target pod.
async fn request(t: &Target, name: &str, command: &[&str], reason: Option<&str>) -> ExecSession {
    let alice = env().client(User::Alice).await.expect("alice");
    let s: ExecSession = serde_json::from_value(json!({
        "apiVersion": "aexec.dev/v1alpha1", "kind": "ExecSession",
        "metadata": {"name": name},
        "spec": {"pod": t.pod, "command": command, "reason": reason,
                 "requester": {"username": "alice", "groups": ["dev", "system:authenticated"]}}
    }))
    .expect("session");
    Api::<ExecSession>::namespaced(alice, &t.namespace)
        .create(&PostParams::default(), &s)
        .await
        .expect("alice creates the session")
}

fn sessions(client: Client, t: &Target) -> Api<ExecSession> {
    Api::namespaced(client, &t.namespace)
}

/// PUT approve/deny as `user` through the API server; the Status on refusal.
async fn decide(
    user: User,
    t: &Target,
    name: &str,
    action: &str,
    body: Vec<u8>,
) -> Result<ExecSession, kube::core::Status> {
    let client = env().client(user).await.expect("client");
    let url = format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/{name}/{action}",
        t.namespace
    );
    let req = http::Request::put(url)
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    match client.request::<ExecSession>(req).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(s)) => Err(*s),
        Err(e) => panic!("{action} as {user:?} failed outside the API: {e:?}"),
    }
}

async fn approve(
    user: User,
    t: &Target,
    name: &str,
    comment: &str,
) -> Result<ExecSession, kube::core::Status> {
    decide(
        user,
        t,
        name,
        "approve",
        serde_json::to_vec(&json!({"comment": comment})).expect("json"),
    )
    .await
}

async fn events_for(t: &Target, name: &str) -> Vec<Event> {
    let admin = env().client(User::Admin).await.expect("admin");
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    Api::<Event>::namespaced(admin, &t.namespace)
        .list(&lp)
        .await
        .expect("events")
        .items
}

async fn wait_event(t: &Target, name: &str, reason: &str) -> Event {
    for _ in 0..50 {
        if let Some(e) = events_for(t, name)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
        {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no {reason} event for {name}: {:?}",
        events_for(t, name).await
    )
}

#[tokio::test]
async fn auto_approved_by_policy() {
    let (t, _op) = target_with_operator().await;
    let p = policy(&t, "auto", json!({"decision": "AutoApprove", "limits": {"approvalValidFor": "10m", "maxDuration": "30m"}})).await;
    request(&t, "s1", &["id"], None).await;
    let s = wait_phase(&t, "s1", Phase::Approved, 20).await;
    let st = s.status.expect("status");
    assert_eq!(
        st.policy.as_deref(),
        Some(p.metadata.name.as_deref().expect("name"))
    );
    assert_eq!(
        st.pod_uid.as_deref(),
        Some(t.uid.as_str()),
        "pod UID pinned"
    );
    assert_eq!(st.container.as_deref(), Some("app"));
    assert!(st.deadline.is_some());
    let limits = st.limits.expect("limits copied from the policy");
    assert_eq!(
        limits.max_duration.map(std::time::Duration::from),
        Some(Duration::from_secs(1800))
    );
    assert!(limits.recording_required);
    wait_event(&t, "s1", "AutoApproved").await;
}

#[tokio::test]
async fn denied_when_no_policy_matches() {
    let (t, _op) = target_with_operator().await;
    request(&t, "s1", &["id"], None).await;
    let s = wait_phase(&t, "s1", Phase::Denied, 20).await;
    let st = s.status.expect("status");
    assert_eq!(st.policy, None);
    let msg = st.message.expect("message");
    assert!(msg.contains("no ExecPolicy governs this pod"), "{msg}");
    let ev = wait_event(&t, "s1", "Denied").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(
        ev.message
            .unwrap_or_default()
            .contains("no ExecPolicy governs this pod")
    );
}

#[tokio::test]
async fn pending_until_required_approvals() {
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "two",
        json!({"decision": "RequireApproval", "approval": {"required": 2, "groups": ["sre"]}}),
    )
    .await;
    request(&t, "s1", &["sh"], Some("INC-42")).await;
    let s = wait_phase(&t, "s1", Phase::Pending, 20).await;
    assert_eq!(
        s.status
            .as_ref()
            .and_then(|s| s.approval_summary.as_deref()),
        Some("0/2")
    );

    approve(User::Bob, &t, "s1", "looks fine")
        .await
        .expect("bob approves");
    // Still pending: one of two.
    let s = wait_for(&t, "s1", |s| {
        s.status
            .as_ref()
            .and_then(|s| s.approval_summary.as_deref())
            == Some("1/2")
    })
    .await;
    assert_eq!(s.phase(), Phase::Pending);

    approve(User::Dave, &t, "s1", "ok with me")
        .await
        .expect("dave approves");
    let s = wait_phase(&t, "s1", Phase::Approved, 20).await;
    let st = s.status.expect("status");
    let who: Vec<(&str, &str)> = st
        .approvals
        .iter()
        .map(|a| {
            (
                a.user.username.as_str(),
                a.comment.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(who, vec![("bob", "looks fine"), ("dave", "ok with me")]);
    for a in &st.approvals {
        assert_eq!(
            a.user.groups,
            vec!["sre", "system:authenticated"],
            "groups as the API server saw them"
        );
    }
    assert!(st.approvals[0].time.0 <= st.approvals[1].time.0);
    wait_event(&t, "s1", "Approved").await;
}

async fn wait_for(
    t: &Target,
    name: &str,
    f: impl Fn(&ExecSession) -> bool + Send + 'static,
) -> ExecSession {
    let admin = env().client(User::Admin).await.expect("admin");
    let api = sessions(admin, t);
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        await_condition(api.clone(), name, move |s: Option<&ExecSession>| {
            s.is_some_and(&f)
        }),
    )
    .await;
    match res {
        Ok(Ok(Some(s))) => s,
        other => panic!(
            "condition on {name} not met: {other:?}; now {:#?}",
            api.get(name).await.ok().and_then(|s| s.status)
        ),
    }
}

#[tokio::test]
async fn requester_cannot_approve_own_session() {
    let (t, _op) = target_with_operator().await;
    policy(&t, "p", json!({"decision": "RequireApproval", "approval": {"required": 1, "groups": ["dev", "sre"]}})).await;
    request(&t, "s1", &["sh"], None).await;
    wait_phase(&t, "s1", Phase::Pending, 20).await;
    // alice has no approve permission at all; give her the approver role to reach the rule that
    // matters: even an approver never approves their own session.
    let admin = env().client(User::Admin).await.expect("admin");
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-approver"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aexec-approver"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]
    }))
    .expect("binding");
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin, &t.namespace)
        .create(&PostParams::default(), &rb)
        .await
        .expect("bind");
    // The API server's RBAC sees a new binding a moment later: until then the refusal is
    // RBAC's ("cannot update resource"), not the operator's rule.
    let mut err = approve(User::Alice, &t, "s1", "me")
        .await
        .expect_err("self-approval refused");
    for _ in 0..50 {
        if !err.message.contains("cannot update resource") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        err = approve(User::Alice, &t, "s1", "me")
            .await
            .expect_err("self-approval refused");
    }
    assert_eq!(err.code, 403);
    assert!(
        err.message
            .contains("you requested this session; someone else must approve it"),
        "{}",
        err.message
    );
    let s = wait_phase(&t, "s1", Phase::Pending, 5).await;
    assert!(s.status.expect("status").approvals.is_empty());
}

#[tokio::test]
async fn approver_outside_policy_is_forbidden() {
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "dave-only",
        json!({"decision": "RequireApproval", "approval": {"required": 1, "users": ["dave"]}}),
    )
    .await;
    request(&t, "s1", &["sh"], None).await;
    wait_phase(&t, "s1", Phase::Pending, 20).await;

    // bob holds the approver role, but this policy names only dave.
    let err = approve(User::Bob, &t, "s1", "")
        .await
        .expect_err("bob is not an approver here");
    assert_eq!(err.code, 403);
    assert!(
        err.message
            .contains("bob may not approve sessions under policy"),
        "{}",
        err.message
    );
    // carol (auditor) and mallory (nothing) are stopped by RBAC: the API server checks before it
    // proxies, and the operator's SubjectAccessReview is the second line.
    for user in [User::Carol, User::Mallory] {
        let err = approve(user, &t, "s1", "")
            .await
            .expect_err("refused by RBAC");
        assert_eq!(err.code, 403, "{user:?}");
        assert!(
            err.message
                .contains("cannot update resource \"execsessions/approve\""),
            "{}",
            err.message
        );
    }
    approve(User::Dave, &t, "s1", "").await.expect("dave may");
    wait_phase(&t, "s1", Phase::Approved, 20).await;
}

#[tokio::test]
async fn approval_expires_when_unused() {
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "short",
        json!({"decision": "AutoApprove", "limits": {"approvalValidFor": "2s"}}),
    )
    .await;
    request(&t, "s1", &["id"], None).await;
    let approved = wait_phase(&t, "s1", Phase::Approved, 20).await;
    let deadline = approved
        .status
        .as_ref()
        .and_then(|s| s.deadline.clone())
        .expect("deadline");
    let s = wait_phase(&t, "s1", Phase::Expired, 15).await;
    let msg = s.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("approval expired unused"), "{msg}");
    assert!(
        k8s_openapi::jiff::Timestamp::now() >= deadline.0,
        "expired no earlier than its deadline"
    );
    wait_event(&t, "s1", "Expired").await;
}

#[tokio::test]
async fn vanished_pod_fails_session() {
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "p",
        json!({"decision": "RequireApproval", "approval": {"groups": ["sre"]}}),
    )
    .await;
    request(&t, "s1", &["sh"], None).await;
    wait_phase(&t, "s1", Phase::Pending, 20).await;
    let admin = env().client(User::Admin).await.expect("admin");
    Api::<Pod>::namespaced(admin, &t.namespace)
        .delete(&t.pod, &DeleteParams::default())
        .await
        .expect("delete pod");
    let s = wait_phase(&t, "s1", Phase::Failed, 30).await;
    let msg = s.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("no longer exists"), "{msg}");
    wait_event(&t, "s1", "PodMissing").await;
}

#[tokio::test]
async fn pod_replaced_is_detected() {
    let env = env();
    // Exclusive: the operator is stopped while the pod is replaced, so it must notice the new
    // UID itself rather than see the pod vanish first.
    let (t, _op) = target_with_operator_exclusive().await;
    policy(
        &t,
        "p",
        json!({"decision": "RequireApproval", "approval": {"groups": ["sre"]}}),
    )
    .await;
    request(&t, "s1", &["sh"], None).await;
    let s = wait_phase(&t, "s1", Phase::Pending, 20).await;
    assert_eq!(
        s.status.and_then(|s| s.pod_uid),
        Some(t.uid.clone()),
        "UID pinned"
    );

    env.kill_operator().await;
    replace_pod(&t).await;
    env.ensure_operator().await.expect("operator back");

    let s = wait_phase(&t, "s1", Phase::Failed, 30).await;
    let msg = s.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("was replaced"), "{msg}");
    wait_event(&t, "s1", "PodReplaced").await;
    // Approving it now is refused: it is over.
    let err = approve(User::Bob, &t, "s1", "").await.expect_err("closed");
    assert_eq!(err.code, 409, "{err:?}");
}

#[tokio::test]
async fn approver_denies_with_comment() {
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "p",
        json!({"decision": "RequireApproval", "approval": {"required": 2, "groups": ["sre"]}}),
    )
    .await;
    request(&t, "s1", &["sh"], Some("just looking")).await;
    wait_phase(&t, "s1", Phase::Pending, 20).await;
    let body =
        serde_json::to_vec(&json!({"comment": "use the read-only dashboard"})).expect("json");
    decide(User::Bob, &t, "s1", "deny", body)
        .await
        .expect("bob denies");
    let s = wait_phase(&t, "s1", Phase::Denied, 10).await;
    let st = s.status.expect("status");
    let denial = st.denial.expect("denial recorded");
    assert_eq!(denial.user.username, "bob");
    assert_eq!(
        denial.comment.as_deref(),
        Some("use the read-only dashboard")
    );
    assert_eq!(
        st.message.as_deref(),
        Some("denied by bob: use the read-only dashboard")
    );
    let ev = wait_event(&t, "s1", "Denied").await;
    assert!(
        ev.message
            .unwrap_or_default()
            .contains("denied by bob: use the read-only dashboard")
    );
    // Nobody can approve it afterwards.
    let err = approve(User::Dave, &t, "s1", "")
        .await
        .expect_err("denied is final");
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn policy_rules_deny_what_they_do_not_allow() {
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "strict",
        json!({"decision": "AutoApprove", "reasonRequired": true,
               "limits": {"allowTty": false, "allowedCommands": ["cat", "/bin/ls"]}}),
    )
    .await;
    request(&t, "no-reason", &["cat", "/etc/hostname"], None).await;
    request(&t, "not-allowed", &["sh"], Some("INC-7")).await;
    request(
        &t,
        "allowed",
        &["/usr/bin/cat", "/etc/hostname"],
        Some("INC-7"),
    )
    .await;
    let msg = |s: ExecSession| s.status.and_then(|s| s.message).unwrap_or_default();
    let m = msg(wait_phase(&t, "no-reason", Phase::Denied, 20).await);
    assert!(m.contains("requires a reason"), "{m}");
    let m = msg(wait_phase(&t, "not-allowed", Phase::Denied, 20).await);
    assert!(
        m.contains("allows only these commands: cat, /bin/ls"),
        "{m}"
    );
    wait_phase(&t, "allowed", Phase::Approved, 20).await;
}

#[tokio::test]
async fn finished_sessions_are_deleted_after_retention() {
    let (t, _op) = target_with_operator().await;
    let created = request(&t, "s1", &["id"], None).await;
    let uid = created.metadata.uid.clone().expect("uid");
    let denied_at = std::time::Instant::now();
    wait_phase(&t, "s1", Phase::Denied, 20).await;
    let admin = env().client(User::Admin).await.expect("admin");
    let api = sessions(admin, &t);
    let retention = aexec_testenv::operator::RETENTION;
    let gone = tokio::time::timeout(
        retention + Duration::from_secs(20),
        kube::runtime::wait::await_condition(
            api.clone(),
            "s1",
            kube::runtime::wait::conditions::is_deleted(&uid),
        ),
    )
    .await;
    assert!(
        gone.is_ok(),
        "session still there {}s after it finished",
        retention.as_secs() + 20
    );
    // Not before its retention: a finished session stays readable that long.
    assert!(
        denied_at.elapsed() + Duration::from_secs(2) >= retention,
        "deleted after {:?}",
        denied_at.elapsed()
    );
    // Its Events stay for the audit trail.
    assert!(!events_for(&t, "s1").await.is_empty());
}

#[tokio::test]
async fn policy_change_applies_to_pending() {
    let (t, _op) = target_with_operator().await;
    let p = policy(
        &t,
        "p",
        json!({"decision": "RequireApproval", "approval": {"required": 2, "groups": ["sre"]}}),
    )
    .await;
    request(&t, "s1", &["sh"], None).await;
    wait_phase(&t, "s1", Phase::Pending, 20).await;
    approve(User::Bob, &t, "s1", "").await.expect("bob");
    wait_for(&t, "s1", |s| {
        s.status
            .as_ref()
            .and_then(|s| s.approval_summary.as_deref())
            == Some("1/2")
    })
    .await;

    // The policy now needs one approval: bob's is enough.
    let admin = env().client(User::Admin).await.expect("admin");
    Api::<ExecPolicy>::all(admin)
        .patch(
            p.metadata.name.as_deref().expect("name"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"approval": {"required": 1}}})),
        )
        .await
        .expect("lower the requirement");
    let s = wait_phase(&t, "s1", Phase::Approved, 20).await;
    assert_eq!(
        s.status.and_then(|s| s.approval_summary),
        Some("1/1".into())
    );
}

#[tokio::test]
async fn operator_restart_keeps_state() {
    let env = env();
    let (t, _op) = target_with_operator_exclusive().await;
    policy(
        &t,
        "p",
        json!({"decision": "RequireApproval", "approval": {"required": 2, "groups": ["sre"]}}),
    )
    .await;
    request(&t, "s1", &["sh"], None).await;
    request(&t, "s2", &["sh"], None).await;
    wait_phase(&t, "s1", Phase::Pending, 20).await;
    wait_phase(&t, "s2", Phase::Pending, 20).await;
    approve(User::Bob, &t, "s1", "first")
        .await
        .expect("bob approves s1");

    env.kill_operator().await;
    // While it is down the aggregated API is unavailable (the API server or the client may keep
    // retrying): nothing is approved behind its back.
    if let Ok(res) =
        tokio::time::timeout(Duration::from_secs(5), approve(User::Dave, &t, "s2", "")).await
    {
        let down = res.expect_err("operator down");
        assert!(down.code >= 500, "{down:?}");
    }
    env.ensure_operator().await.expect("operator restarted");
    // bob's approval still counts; approving again is refused, not doubled.
    let again = approve(User::Bob, &t, "s1", "again")
        .await
        .expect_err("already approved");
    assert_eq!(again.code, 409);
    assert!(
        again.message.contains("bob already approved this session"),
        "{}",
        again.message
    );
    approve(User::Dave, &t, "s1", "second")
        .await
        .expect("dave approves s1");
    let s = wait_phase(&t, "s1", Phase::Approved, 20).await;
    let names: Vec<String> = s
        .status
        .expect("status")
        .approvals
        .into_iter()
        .map(|a| a.user.username)
        .collect();
    assert_eq!(names, vec!["bob", "dave"]);
    let s2 = wait_phase(&t, "s2", Phase::Pending, 5).await;
    assert!(s2.status.expect("status").approvals.is_empty());
}

#[tokio::test]
async fn bad_requests_get_kubernetes_status_errors() {
    let (t, _op) = target_with_operator().await;
    policy(
        &t,
        "p",
        json!({"decision": "RequireApproval", "approval": {"groups": ["sre"]}}),
    )
    .await;
    request(&t, "s1", &["sh"], None).await;
    wait_phase(&t, "s1", Phase::Pending, 20).await;

    let err = decide(User::Bob, &t, "s1", "approve", b"{not json".to_vec())
        .await
        .expect_err("malformed");
    assert_eq!(
        (err.code, err.reason.as_str()),
        (400, "BadRequest"),
        "{err:?}"
    );
    let err = decide(
        User::Bob,
        &t,
        "s1",
        "approve",
        br#"{"comment": "x", "extra": 1}"#.to_vec(),
    )
    .await
    .expect_err("unknown field");
    assert_eq!(err.code, 400);
    let long = serde_json::to_vec(&json!({"comment": "x".repeat(2000)})).expect("json");
    let err = decide(User::Bob, &t, "s1", "approve", long)
        .await
        .expect_err("comment too long");
    assert_eq!(err.code, 422, "{err:?}");
    let huge = serde_json::to_vec(&json!({"comment": "x".repeat(200_000)})).expect("json");
    let err = decide(User::Bob, &t, "s1", "approve", huge)
        .await
        .expect_err("body too large");
    assert_eq!(err.code, 413, "{err:?}");
    let err = approve(User::Bob, &t, "nope", "")
        .await
        .expect_err("unknown session");
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    let other = Target {
        namespace: "default".into(),
        ..t.clone()
    };
    let err = approve(User::Bob, &other, "s1", "")
        .await
        .expect_err("wrong namespace");
    assert_eq!(err.code, 404);
    let s = wait_phase(&t, "s1", Phase::Pending, 5).await;
    assert!(
        s.status.expect("status").approvals.is_empty(),
        "no bad request left a trace"
    );
}

#[tokio::test]
async fn direct_requests_without_front_proxy_certificate_are_refused() {
    let (t, _op) = target_with_operator().await;
    // Straight to the operator's port, bypassing the API server, with a forged identity header
    // and no client certificate.
    let url = format!(
        "https://{}:{}",
        aexec_testenv::netns::OPERATOR_IP,
        aexec_testenv::operator::API_PORT
    );
    let mut config = kube::Config::new(url.parse().expect("url"));
    config.accept_invalid_certs = true;
    let direct = Client::try_from(config).expect("client");
    let req = http::Request::put(format!(
        "/apis/subresources.aexec.dev/v1alpha1/namespaces/{}/execsessions/s1/approve",
        t.namespace
    ))
    .header("X-Remote-User", "dave")
    .header("X-Remote-Group", "sre")
    .body(b"{}".to_vec())
    .expect("request");
    match direct.request_text(req).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized"), "{s:?}");
            assert!(
                s.message.contains("direct requests are refused"),
                "{}",
                s.message
            );
        }
        other => panic!("a direct request must be refused with a Status, got {other:?}"),
    }
}

#[tokio::test]
async fn operator_serves_health_readiness_and_metrics() {
    let (t, _op) = target_with_operator().await;
    policy(&t, "auto", json!({"decision": "AutoApprove"})).await;
    request(&t, "s1", &["id"], None).await;
    wait_phase(&t, "s1", Phase::Approved, 20).await;
    let ops = format!(
        "http://{}:{}",
        aexec_testenv::netns::OPERATOR_IP,
        aexec_testenv::operator::OPS_PORT
    );
    let get = |path: &str| {
        let url = format!("{ops}{path}");
        async move { aexec_testenv::env::http_get(&url).await }
    };
    assert_eq!(get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(get("/readyz").await.map(|r| r.0), Some(200));
    let (code, metrics) = get("/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    for want in [
        "aexec_sessions{phase=\"Approved\"}",
        "aexec_session_transitions_total{phase=\"Approved\"}",
        "aexec_decision_duration_seconds_count",
    ] {
        assert!(metrics.contains(want), "{want} missing from:\n{metrics}");
    }
}
