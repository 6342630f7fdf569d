#!/usr/bin/env bash
# End-to-end check of scripts/kube-test-cluster: brings a cluster up, exercises
# Deployments, Services/EndpointSlices, the simulated pod behaviours (see
# kwok-stages.yaml), server-side apply, Jobs and namespace deletion, then brings
# it down and checks that no process and no listening port is left.
# Uses only the kubectl built by the script. Exits non-zero on the first failure.
#
# Its cluster lives in ${CARAVAN_KUBE_STATE:-/tmp/caravan-kube-smoke}, so that it
# does not stop a cluster that is up in the default state directory.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER="$HERE/../kube-test-cluster"
export CARAVAN_KUBE_STATE="${CARAVAN_KUBE_STATE:-/tmp/caravan-kube-smoke}"
NS=caravan-smoke
PASSED=0

say() { printf '[smoke] %s\n' "$*" >&2; }
ok() { PASSED=$((PASSED + 1)); say "ok: $*"; }
fail() {
  say "FAIL: $*"
  echo "smoke: $PASSED passed, 1 failed"
  exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

DOWN_DONE=0
on_exit() {
  if [[ $DOWN_DONE -eq 0 && -z "${SMOKE_KEEP:-}" ]]; then "$CLUSTER" down || true; fi
}
trap on_exit EXIT

# ------------------------------------------------------------------- up ---
t0="$(now)"
KUBECONFIG_PATH="$("$CLUSTER" up | tail -n 1)"
say "up took $(elapsed "$t0" "$(now)")s"
[[ -f "$KUBECONFIG_PATH" ]] || fail "up did not print a kubeconfig path (got '$KUBECONFIG_PATH')"
KUBECTL_BIN="$(dirname "$KUBECONFIG_PATH")/kubectl"
[[ -x "$KUBECTL_BIN" ]] || fail "no kubectl next to the kubeconfig"
k() { "$KUBECTL_BIN" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ok "up printed $KUBECONFIG_PATH"

"$CLUSTER" status >/dev/null || fail "status is not 0 after up"
ok "status exit 0"

again="$("$CLUSTER" up | tail -n 1)"
[[ "$again" == "$KUBECONFIG_PATH" ]] || fail "second up printed '$again'"
ok "second up is idempotent"

[[ "$(k config current-context)" == caravan-test ]] || fail "context is not caravan-test"
k version -o json | grep -q '"gitVersion"' || fail "kubectl version"
k get nodes -o wide >&2
[[ "$(k get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" -ge 1 ]] ||
  fail "no Ready node"
ok "nodes Ready"

# Unauthenticated requests are refused.
if "$KUBECTL_BIN" --server "$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')" \
  --insecure-skip-tls-verify get ns >/dev/null 2>&1; then
  fail "anonymous request was allowed"
fi
ok "API requires authentication"

# -------------------------------------------------------- deployment + svc ---
deployment() { # name replicas annotations-yaml-lines
  cat <<EOF
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $1
  namespace: $NS
spec:
  replicas: $2
  progressDeadlineSeconds: 600
  selector:
    matchLabels: {app: $1}
  template:
    metadata:
      labels: {app: $1}
      annotations: {$3}
    spec:
      containers:
      - name: app
        image: example/app:1
        ports:
        - containerPort: 8080
EOF
}

k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
$(deployment web 2 "")
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: $NS
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
EOF
t0="$(now)"
k -n "$NS" rollout status deployment/web --timeout=60s >&2 || fail "rollout of web"
ok "deployment web rolled out in $(elapsed "$t0" "$(now)")s"

pod="$(k -n "$NS" get pods -l app=web -o jsonpath='{.items[0].metadata.name}')"
k -n "$NS" get pod "$pod" -o jsonpath='{.status.phase} {.status.podIP} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].started} {.status.containerStatuses[0].state.running.startedAt}{"\n"}' >&2
for cond in PodScheduled Initialized ContainersReady Ready; do
  [[ "$(k -n "$NS" get pod "$pod" -o jsonpath="{.status.conditions[?(@.type==\"$cond\")].status}")" == True ]] ||
    fail "pod $pod condition $cond is not True"
done
[[ -n "$(k -n "$NS" get pod "$pod" -o jsonpath='{.status.podIP}')" ]] || fail "pod has no IP"
[[ "$(k -n "$NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].ready}/{.status.containerStatuses[0].started}')" == true/true ]] ||
  fail "container not ready/started"
ok "pod status is Running and Ready"

ready_endpoints() {
  k -n "$NS" get endpointslices -l kubernetes.io/service-name=web \
    -o jsonpath='{range .items[*].endpoints[*]}{.conditions.ready}{"\n"}{end}' | grep -c true || true
}
for _ in $(seq 1 100); do [[ "$(ready_endpoints)" -eq 2 ]] && break; sleep 0.2; done
[[ "$(ready_endpoints)" -eq 2 ]] || fail "EndpointSlice of web has $(ready_endpoints) ready endpoints, want 2"
ok "EndpointSlice has 2 ready endpoints"

# ---------------------------------------------------------- ready-after: 3 ---
t0="$(now)"
deployment slow 1 '"caravan.test/ready-after": "3"' | k apply -f - >/dev/null
sleep 1.5
spod="$(k -n "$NS" get pods -l app=slow -o jsonpath='{.items[0].metadata.name}')"
[[ "$(k -n "$NS" get pod "$spod" -o jsonpath='{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}')" == Running/False ]] ||
  fail "slow pod is not Running/not-Ready after 1.5s: $(k -n "$NS" get pod "$spod" -o jsonpath='{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}')"
k -n "$NS" rollout status deployment/slow --timeout=60s >&2 || fail "rollout of slow"
took="$(elapsed "$t0" "$(now)")"
awk -v t="$took" 'BEGIN { exit !(t >= 2.8 && t <= 8) }' || fail "slow rollout took ${took}s, want about 3s"
ok "ready-after 3 rollout took ${took}s"

# ------------------------------------------------------------------ crash ---
deployment crash 1 '"caravan.test/crash": "true"' | k apply -f - >/dev/null
if k -n "$NS" rollout status deployment/crash --timeout=6s >&2; then
  fail "rollout of crash completed"
fi
cpod="$(k -n "$NS" get pods -l app=crash -o jsonpath='{.items[0].metadata.name}')"
cstate="$(k -n "$NS" get pod "$cpod" -o jsonpath='{.status.phase} {.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].lastState.terminated.reason} {.status.containerStatuses[0].ready}')"
say "crash pod: $cstate"
read -r cphase creason ccount ccode creason2 cready <<<"$cstate"
[[ "$cphase" == Running && "$creason" == CrashLoopBackOff && "$ccode" == 1 && "$creason2" == Error && "$cready" == false ]] ||
  fail "crash pod status: $cstate"
((ccount > 0)) || fail "restartCount is $ccount"
sleep 3
ccount2="$(k -n "$NS" get pod "$cpod" -o jsonpath='{.status.containerStatuses[0].restartCount}')"
((ccount2 > ccount)) || fail "restartCount does not grow ($ccount -> $ccount2)"
ok "crash: CrashLoopBackOff, restartCount $ccount -> $ccount2, rollout not complete"

# ------------------------------------------------------- server-side apply ---
ssa() { k apply --server-side --field-manager=caravan --validate=strict "$@"; }
cat >/tmp/caravan-smoke-ssa.$$ <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: $NS
data:
  a: "1"
$(deployment ssa 1 "")
EOF
ssa -f /tmp/caravan-smoke-ssa.$$ >&2 || fail "server-side apply"
k -n "$NS" get configmap cfg -o jsonpath='{.metadata.managedFields[*].manager}' | grep -qw caravan ||
  fail "field manager caravan not recorded"
k -n "$NS" rollout status deployment/ssa --timeout=60s >&2 || fail "rollout of ssa"
cat >/tmp/caravan-smoke-bad.$$ <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: $NS
  bogus: 1
data:
  a: "2"
EOF
if ssa -f /tmp/caravan-smoke-bad.$$ >/dev/null 2>&1; then
  rm -f /tmp/caravan-smoke-ssa.$$ /tmp/caravan-smoke-bad.$$
  fail "--validate=strict accepted an unknown field"
fi
rm -f /tmp/caravan-smoke-ssa.$$ /tmp/caravan-smoke-bad.$$
ok "server-side apply (--field-manager=caravan, --validate=strict) works and rejects unknown fields"

# ------------------------------------------------------------------- jobs ---
job() { # name annotations
  cat <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $1
  namespace: $NS
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations: {$2}
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: example/job:1
EOF
}
job ok-job '"caravan.test/ready-after": "1"' | k apply -f - >/dev/null
job bad-job '"caravan.test/exit-code": "3", "caravan.test/termination-message": "boom"' | k apply -f - >/dev/null
k -n "$NS" wait --for=condition=Complete job/ok-job --timeout=60s >&2 || fail "ok-job did not complete"
k -n "$NS" wait --for=condition=Failed job/bad-job --timeout=60s >&2 || fail "bad-job did not fail"
bstate="$(k -n "$NS" get pods -l job-name=bad-job -o jsonpath='{.items[0].status.phase} {.items[0].status.containerStatuses[0].state.terminated.exitCode} {.items[0].status.containerStatuses[0].state.terminated.message}')"
[[ "$bstate" == "Failed 3 boom" ]] || fail "bad-job pod: '$bstate'"
ok "jobs: exit-code 0 -> Complete, exit-code 3 -> Failed with message"

# --------------------------------------------------------- pod deletion ---
k -n "$NS" delete pod "$pod" --timeout=30s >/dev/null || fail "pod delete"
k -n "$NS" rollout status deployment/web --timeout=60s >/dev/null || fail "web did not recover"
ok "pod deletion works and the ReplicaSet replaces it"

# ------------------------------------------------------ namespace deletion ---
t0="$(now)"
k delete namespace "$NS" --timeout=120s >/dev/null || fail "namespace delete"
if k get namespace "$NS" >/dev/null 2>&1; then fail "namespace still exists"; fi
left="$(k get pods,deployments,replicasets,services,endpointslices,jobs -n "$NS" -o name 2>/dev/null | wc -l)"
[[ "$left" -eq 0 ]] || fail "$left objects left in $NS"
ok "namespace deleted with everything in it in $(elapsed "$t0" "$(now)")s"

# ------------------------------------------------------------------- down ---
ports="$(cut -d= -f2 "$CARAVAN_KUBE_STATE/ports" | tr '\n' ' ')"
"$CLUSTER" down
DOWN_DONE=1
if "$CLUSTER" status >/dev/null 2>&1; then fail "status is 0 after down"; fi
if command -v ps >/dev/null; then
  procs="$(ps -eo pid=,args= | grep -F -- "$CARAVAN_KUBE_STATE/" | grep -v grep || true)"
else
  procs="$(grep -laF -- "$CARAVAN_KUBE_STATE/" /proc/[0-9]*/cmdline 2>/dev/null || true)"
fi
[[ -z "$procs" ]] || fail "processes left after down: $procs"
for p in $ports; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then fail "port $p still listening after down"; fi
done
[[ ! -e "$CARAVAN_KUBE_STATE" ]] || fail "state directory left after down"
"$CLUSTER" down >/dev/null 2>&1 || fail "second down failed"
ok "down left no process, no listening port ($ports) and no state"

echo "smoke: $PASSED passed, 0 failed"
