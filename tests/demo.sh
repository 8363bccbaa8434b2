#!/usr/bin/env bash
# The demo, run by `./dev demo` inside the local control plane (KUBECONFIG is admin's,
# AEXEC_TESTENV_DIR holds every user's kubeconfig, AEXEC_KUBECTL is kubectl at the server's
# version). Non-interactive when stdin is not a terminal or CI is set.
set -euo pipefail
k() { "$AEXEC_KUBECTL" "$@"; }
as() { local u=$1; shift; "$AEXEC_KUBECTL" --kubeconfig "$AEXEC_TESTENV_DIR/$u.kubeconfig" "$@"; }
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "A 'production' namespace with a pod on the kwok node"
k create namespace prod >/dev/null
k -n prod apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: api, labels: {app: api}}
spec:
  nodeName: kwok-node-0
  containers: [{name: app, image: registry.invalid/api:1}]
YAML
k -n prod wait --for=condition=Ready pod/api --timeout=30s >/dev/null
run k -n prod get pods -o wide

say "alice may read pods but holds no pods/exec: plain kubectl exec is refused"
run as alice -n prod exec api -- id || true

say "The API she will use instead: an ExecSession, governed by an ExecPolicy"
k apply -f - >/dev/null <<'YAML'
apiVersion: aexec.dev/v1alpha1
kind: ExecPolicy
metadata: {name: prod-shell}
spec:
  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: prod}}
  decision: RequireApproval
  approval: {required: 1, groups: [sre], pendingTimeout: 30m}
  limits: {maxDuration: 1h, idleTimeout: 15m, approvalValidFor: 10m}
  reasonRequired: true
YAML
run k get execpolicies -o wide
say "alice cannot pretend to be someone else: the requester must be the creating user"
as alice -n prod create -f - <<'YAML' || true
apiVersion: aexec.dev/v1alpha1
kind: ExecSession
metadata: {name: spoofed}
spec:
  pod: api
  command: [sh]
  requester: {username: bob, groups: [sre]}
YAML
as alice -n prod create -f - >/dev/null <<'YAML'
apiVersion: aexec.dev/v1alpha1
kind: ExecSession
metadata: {name: inc-1234}
spec:
  pod: api
  command: [sh, -c, "cat /etc/hostname; id"]
  reason: INC-1234 api latency
  requester: {username: alice, groups: [dev, system:authenticated]}
YAML
run k -n prod get execsessions -o wide
say "The spec is immutable once created: what is approved is what runs"
run k -n prod patch execsession inc-1234 --type=merge -p '{"spec":{"command":["rm","-rf","/"]}}' || true

say "The operator that decides, brokers and records these sessions, and the kubectl aexec plugin,"
say "are built and tested end to end (./dev test); this demo does not yet run the whole story with"
say "the plugin (ask, approve, attach, replay, verify): see README 'Using the plugin' and docs/."
if [ -t 0 ] && [ -z "${CI:-}" ]; then
  say "A shell inside the control plane: kubectl as admin; other users: as alice|bob|carol|dave|mallory ..."
  export -f as k
  PATH="$AEXEC_KUBECTL_DIR:$PATH" bash -i || true
fi
