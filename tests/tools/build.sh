#!/usr/bin/env bash
# Builds the test control plane from Go modules and caches it under ~/.cache/mltask-operator.
#
#   tests/tools/build.sh            build (or reuse) everything, print the bin directory
#
# Binaries land in $MLTASK_CACHE/<component>-<version>/ and are linked into
# $MLTASK_CACHE/bin/, which is what the tests and the cluster make targets use.
# Argo's full Workflow CRDs are copied from the pinned argo-workflows module into
# $MLTASK_CACHE/argo-<version>/crds/. Nothing here is ever written into the repo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${MLTASK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mltask-operator}
BIN="$CACHE/bin"
mkdir -p "$BIN"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod

log() { echo "[build-tools] $*" >&2; }

check_pin() { # module-dir module-path expected-version
  local got
  got=$(cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
  [[ "$got" == "$3" ]] || { log "$1/go.mod pins $2 $got but versions.env says $3"; exit 1; }
}

# build <module-dir> <out-dir> <binary-name> <package> [ldflags]
build() {
  local dir=$1 out=$2 name=$3 pkg=$4 ldflags=${5:-}
  if [[ -x "$out/$name" ]]; then
    log "cached $out/$name"
  else
    mkdir -p "$out"
    log "building $name from $pkg (cold builds take minutes)"
    local t0=$SECONDS
    (cd "$here/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out/$name.tmp" "$pkg")
    mv "$out/$name.tmp" "$out/$name"
    log "built $name in $((SECONDS - t0))s"
  fi
  ln -sfn "$out/$name" "$BIN/$name"
}

# copy_crds <module@version> <out-dir> <link-name> <file-that-marks-done> <glob-in-module>
# CRDs taken from a pinned Go module (downloaded, nothing built), linked as $CACHE/<link-name>.
copy_crds() {
  local module=$1 out=$2 link=$3 marker=$4 glob=$5 src
  if [[ ! -f "$out/$marker" ]]; then
    src=$(go mod download -json "$module" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    mkdir -p "$out"
    # shellcheck disable=SC2086  # the glob is meant to expand
    cp "$src"/$glob "$out/"
    chmod u+w "$out"/*.yaml
    log "copied CRDs of $module to $out"
  fi
  ln -sfn "$out" "$CACHE/$link"
}

k8s_ldflags() {
  local v=$K8S_VERSION minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local f=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    f+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$f"
}

check_pin kube k8s.io/kubernetes "$K8S_VERSION"
check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin helm helm.sh/helm/v3 "$HELM_VERSION"
check_pin argo github.com/argoproj/argo-workflows/v3 "$ARGO_VERSION"
check_pin kwok sigs.k8s.io/kwok "$KWOK_VERSION"

only=${*:-kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm argo-crds prometheus-crds argocd-crds workflow-controller kwok kwok-crds}
for what in $only; do
  case $what in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl)
      build kube "$CACHE/kubernetes-$K8S_VERSION" "$what" "k8s.io/kubernetes/cmd/$what" "$(k8s_ldflags)" ;;
    etcd)
      build etcd "$CACHE/etcd-$ETCD_VERSION" etcd go.etcd.io/etcd/server/v3 \
        "-X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" ;;
    helm)
      build helm "$CACHE/helm-$HELM_VERSION" helm helm.sh/helm/v3/cmd/helm \
        "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
    workflow-controller)
      build argo "$CACHE/argo-$ARGO_VERSION" workflow-controller \
        github.com/argoproj/argo-workflows/v3/cmd/workflow-controller \
        "-X github.com/argoproj/argo-workflows/v3.version=$ARGO_VERSION -X github.com/argoproj/argo-workflows/v3.gitTreeState=clean" ;;
    kwok)
      build kwok "$CACHE/kwok-$KWOK_VERSION" kwok sigs.k8s.io/kwok/cmd/kwok \
        "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" ;;
    argo-crds)  # Argo's full Workflow CRDs: every Workflow the operator writes is validated
      copy_crds "github.com/argoproj/argo-workflows/v3@$ARGO_VERSION" \
        "$CACHE/argo-$ARGO_VERSION/crds" argo-crds argoproj.io_workflows.yaml \
        'manifests/base/crds/full/argoproj.io_*.yaml' ;;
    prometheus-crds)  # the ServiceMonitor CRD: the chart's optional ServiceMonitor is checked
      copy_crds "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        "$CACHE/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION/crds" prometheus-operator-crds \
        monitoring.coreos.com_servicemonitors.yaml \
        example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml ;;
    argocd-crds)  # Argo CD's Application CRD: the example Application is checked
      copy_crds "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" \
        "$CACHE/argo-cd-$ARGOCD_VERSION/crds" argocd-crds application-crd.yaml \
        manifests/crds/application-crd.yaml ;;
    kwok-crds)  # kwok's Logs CRD: kwok serves each simulated pod's log from a file it names
      copy_crds "sigs.k8s.io/kwok@$KWOK_VERSION" "$CACHE/kwok-$KWOK_VERSION/crds" kwok-crds \
        kwok.x-k8s.io_logs.yaml kustomize/crd/bases/kwok.x-k8s.io_logs.yaml ;;
    *) log "unknown component $what"; exit 2 ;;
  esac
done
echo "$BIN"
