#!/usr/bin/env bash
# The demo, run by `./dev demo` inside the local control plane with the operator running as the
# chart's ServiceAccount and recording to a local directory:
#   KUBECONFIG            admin's kubeconfig
#   AEXEC_TESTENV_DIR     the run directory, with every user's kubeconfig (alice.kubeconfig, ...)
#   AEXEC_KUBECTL         kubectl at the server's version
#   AEXEC_PLUGIN_BIN      the kubectl-aexec binary (found by kubectl through PATH, as krew does)
#   AEXEC_RECORDINGS_DIR  where the operator keeps recordings
#   AEXEC_NODE            real (kubelet, containerd, runc; the operator in the cluster) or kwok
#   AEXEC_POD_IMAGE       the image of the demo's pod on the real node (busybox, built locally)
# The story: alice asks for a shell in a "production" pod, bob approves, alice's command runs,
# carol replays, exports and verifies it; the session is deleted and carol verifies it from its
# signed record, offline. Non-interactive when stdin is not a terminal or CI is
# set; otherwise it ends in a shell to try it by hand.
set -euo pipefail

NS=${AEXEC_DEMO_NAMESPACE:-prod}
: "${AEXEC_KUBECTL:?run through ./dev demo}" "${AEXEC_TESTENV_DIR:?run through ./dev demo}"
: "${AEXEC_PLUGIN_BIN:?run through ./dev demo}" "${AEXEC_RECORDINGS_DIR:?run through ./dev demo}"

# kubectl and the plugin on PATH, as they are after `kubectl krew install aexec`.
BIN="$AEXEC_TESTENV_DIR/demo-bin"
mkdir -p "$BIN"
ln -sf "$AEXEC_KUBECTL" "$BIN/kubectl"
ln -sf "$AEXEC_PLUGIN_BIN" "$BIN/kubectl-aexec"
export PATH="$BIN:$PATH"

# `as USER kubectl ...`: a command as one of the local users (their own kubeconfig).
as() { local u=$1; shift; KUBECONFIG="$AEXEC_TESTENV_DIR/$u.kubeconfig" "$@"; }
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
# One argument quoted as a shell user would type it.
quote() {
  if [[ $1 =~ ^[][A-Za-z0-9_./:=@%+,{}-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
# Prints a command as USER would type it: `show USER CMD ARGS...`.
show() {
  local who=$1 a line=
  shift
  for a in "$@"; do line+=" $(quote "$a")"; done
  printf '\033[2m%s$\033[0m%s\n' "$who" "$line"
}
run() { local who=$1; shift; show "$who" "$@"; as "$who" "$@"; }

if [ "${AEXEC_NODE:-kwok}" = real ]; then
  say "A cluster with a real node (kubelet, containerd, runc) and the operator running in it (helm install, 2 replicas)"
  run admin kubectl get nodes -o wide
  run admin kubectl -n aexec-system get pods -o wide
  say "A '$NS' namespace with a pod running busybox as an unprivileged user"
  kubectl create namespace "$NS" >/dev/null
  # Pods need the namespace's ServiceAccount, which its controller makes a moment later.
  for _ in $(seq 1 100); do kubectl -n "$NS" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done
  kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: api, labels: {app: api}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, runAsGroup: 1000, runAsNonRoot: true}
  containers:
  - {name: app, image: ${AEXEC_POD_IMAGE:?}, imagePullPolicy: Never, command: [sleep, "2000000"], workingDir: /home/app}
YAML
else
  say "A '$NS' namespace with a pod on the kwok node"
  kubectl create namespace "$NS" >/dev/null
  kubectl -n "$NS" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: api, labels: {app: api}}
spec:
  nodeName: kwok-node-0
  containers: [{name: app, image: registry.invalid/api:1}]
YAML
fi
kubectl -n "$NS" wait --for=condition=Ready pod/api --timeout=90s >/dev/null
run admin kubectl -n "$NS" get pods

say "alice (group dev) may read pods but holds no pods/exec: plain kubectl exec is refused"
run alice kubectl -n "$NS" exec api -- id || true

say "Instead, an ExecPolicy governs exec in $NS: one approval from the sre group, a reason required"
kubectl apply -f - >/dev/null <<YAML
apiVersion: aexec.dev/v1alpha1
kind: ExecPolicy
metadata: {name: $NS-shell}
spec:
  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $NS}}
  decision: RequireApproval
  approval: {required: 1, groups: [sre], pendingTimeout: 30m}
  limits: {maxDuration: 1h, idleTimeout: 15m, approvalValidFor: 10m}
  reasonRequired: true
YAML
run admin kubectl get execpolicies

say "alice asks with kubectl aexec, as she would with kubectl exec; it waits for approval"
ALICE_OUT="$AEXEC_TESTENV_DIR/demo-alice.out"
ASK=(kubectl aexec -n "$NS" api -r "INC-1234 api latency" --wait 2m -- sh -c 'hostname; id; echo "diagnosing INC-1234"; exit 3')
show alice "${ASK[@]}"
as alice "${ASK[@]}" >"$ALICE_OUT" 2>&1 &
ALICE=$!
# The session alice's request created, as bob sees it.
NAME=
for _ in $(seq 1 100); do
  NAME=$(as bob kubectl -n "$NS" get execsessions -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
  [ -n "$NAME" ] && grep -q 'send this to an approver' "$ALICE_OUT" && break
  sleep 0.2
done
[ -n "$NAME" ] || { cat "$ALICE_OUT"; echo "demo: alice's session did not appear" >&2; exit 1; }
SEEN=$(wc -l <"$ALICE_OUT")
sed 's/^/    /' "$ALICE_OUT"

say "bob (group sre) sees what waits for approval, and why"
run bob kubectl aexec list -n "$NS" --phase Pending
say "alice (a requester) cannot approve, nor can mallory (no role): only the policy's approvers can"
run alice kubectl aexec approve "$NAME" -n "$NS" || true
run mallory kubectl aexec approve "$NAME" -n "$NS" || true

say "bob approves; alice's command runs at once, through the operator, and is recorded"
run bob kubectl aexec approve "$NAME" -n "$NS" -m "ok for INC-1234"
code=0
wait "$ALICE" || code=$?
tail -n +"$((SEEN + 1))" "$ALICE_OUT" | sed 's/^/    /'
echo "    (alice's kubectl aexec exited with $code, the remote command's exit code)"
[ "$code" = 3 ] || { echo "demo: expected exit code 3 from alice's command" >&2; exit 1; }

say "carol (group audit) reviews: the list, the details, the replay"
run carol kubectl aexec list -n "$NS" -o wide
run carol kubectl aexec describe "$NAME" -n "$NS"
run carol kubectl aexec replay "$NAME" -n "$NS"
say "carol exports it for asciinema and verifies that nobody altered it"
CAST="$AEXEC_TESTENV_DIR/$NAME.cast"
run carol kubectl aexec export "$NAME" -n "$NS" --format v2 -o "$CAST"
head -c 300 "$CAST" | head -n 2
run carol kubectl aexec verify "$NAME" -n "$NS"

say "The evidence outlives the object: alice cannot delete her session; when an admin does, its signed record stays"
run alice kubectl -n "$NS" delete execsession "$NAME" || true
SESSION_UID=$(kubectl -n "$NS" get execsession "$NAME" -o 'jsonpath={.metadata.uid}')
run admin kubectl -n "$NS" delete execsession "$NAME"
run carol kubectl aexec list --archived -n "$NS"
KEYS="$AEXEC_TESTENV_DIR/aexec-keys.pem"
show carol kubectl aexec keys '>' aexec-keys.pem
as carol kubectl aexec keys > "$KEYS"
sed 's/^/    /' "$KEYS"

say "The recording and its signed record, in the operator's store"
(cd "$AEXEC_RECORDINGS_DIR" && find . -type f | sort | sed 's/^\.\//    /')

say "carol verifies a copy of it with the pinned public keys, with no cluster at all"
COPY="$AEXEC_TESTENV_DIR/copy-of-$NAME"
cp -r "$AEXEC_RECORDINGS_DIR/$NS/$NAME-$SESSION_UID" "$COPY"
show carol kubectl aexec verify --dir "copy-of-$NAME" --public-key aexec-keys.pem
env -u KUBECONFIG kubectl aexec verify --dir "$COPY" --public-key "$KEYS"

say "alice's own exec rights did not change: she still cannot exec without approval"
run alice kubectl -n "$NS" exec api -- id || true

if [ -t 0 ] && [ -z "${CI:-}" ]; then
  say "Your turn. A shell in the control plane: kubectl runs as admin; 'as alice|bob|carol|dave|mallory CMD' as a user."
  cat <<EOF
    N=\$(as alice kubectl aexec -n $NS api -it -r "try it" --no-wait -- sh)   # ask; prints the name
    as bob kubectl aexec approve \$N -n $NS                                   # approve
    as alice kubectl aexec attach \$N -n $NS                                  # a recorded shell
    as carol kubectl aexec replay \$N -n $NS --speed 2                         # watch it again
    exit                                                                     # stops everything
EOF
  export -f as
  PS1='aexec-demo$ ' bash --norc -i || true
else
  say "Done. Run ./dev demo in a terminal to end in a shell and try it by hand."
fi
