//go:build tools

// Package tools pins the real Kubernetes, etcd and Helm commands that `make k8s` builds.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "helm.sh/helm/v4/cmd/helm"
)
