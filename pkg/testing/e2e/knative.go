//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/pkg/testing/cluster"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

// Autoscaler settings for the test: Knative's defaults keep an idle revision
// for 60 s + 30 s before it scales to zero; the test waits for zero twice.
var autoscalerSettings = map[string]string{
	"stable-window":              "10s",
	"scale-to-zero-grace-period": "10s",
}

// deployKnative builds Knative Serving and Eventing from their modules with ko
// (.ci/cluster.sh gathered their release manifests) and applies them.
func deployKnative(ctx context.Context, c *cluster.Cluster) error {
	dir := filepath.Join(env.assets, "src", "knative")
	for _, part := range []struct{ file, ns string }{
		{"serving.yaml", "knative-serving"},
		{"eventing.yaml", "knative-eventing"},
	} {
		t0 := time.Now()
		manifest, err := env.images.resolve(ctx, dir, "knative", dir, part.file)
		if err != nil {
			return err
		}
		objs, err := controlplane.Decode(manifest)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if o.GetKind() == "ConfigMap" && o.GetName() == "config-autoscaler" {
				for k, v := range autoscalerSettings {
					_ = unstructured.SetNestedField(o.Object, v, "data", k)
				}
			}
			if o.GetKind() == "ConfigMap" && o.GetName() == "config-network" && o.GetNamespace() == "knative-serving" {
				// Traefik's Knative provider reconciles the KIngresses.
				_ = unstructured.SetNestedField(o.Object, traefikIngressClass, "data", "ingress-class")
			}
			if o.GetKind() == "ConfigMap" && o.GetName() == "config-features" && o.GetNamespace() == "knative-eventing" {
				// Senders carry OIDC tokens; the Broker's ingress enforces EventPolicies.
				_ = unstructured.SetNestedField(o.Object, "enabled", "data", "authentication-oidc")
			}
		}
		if err := c.Apply(ctx, encode(objs), 5*time.Minute); err != nil {
			return fmt.Errorf("%s: %w", part.file, err)
		}
		if err := waitDeployments(ctx, c.Client, part.ns, 5*time.Minute); err != nil {
			return fmt.Errorf("%s: %w\n%s", part.ns, err, podProblems(ctx, c.Client, part.ns))
		}
		reportf("knative: %s built with ko, applied and available in %s", part.ns, time.Since(t0).Round(time.Second))
		if part.ns == "knative-serving" {
			if err := deployTraefik(ctx, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// traefikIngressClass is the KIngress class Traefik's Knative provider takes.
const traefikIngressClass = "traefik.ingress.networking.knative.dev"

// deployTraefik builds Traefik with ko in the module .ci/cluster.sh prepared,
// and applies Gateway API's experimental CRDs and traefik.yaml: Knative's
// ingress, and the Gateway API implementation of the Gateway entry point.
func deployTraefik(ctx context.Context, c *cluster.Cluster) error {
	t0 := time.Now()
	dir := filepath.Join(env.assets, "src", "traefik")
	crds, err := os.ReadFile(filepath.Join(dir, "gateway-api-experimental.yaml"))
	if err != nil {
		return err
	}
	manifest, err := env.images.resolve(ctx, dir, "traefik", dir, filepath.Join(env.root, "pkg", "testing", "e2e", "traefik.yaml"))
	if err != nil {
		return err
	}
	if err := c.Apply(ctx, append(append(crds, "\n---\n"...), manifest...), 3*time.Minute); err != nil {
		return fmt.Errorf("traefik: %w", err)
	}
	if err := waitDeployments(ctx, c.Client, "traefik", 3*time.Minute); err != nil {
		return fmt.Errorf("traefik: %w\n%s", err, podProblems(ctx, c.Client, "traefik"))
	}
	reportf("traefik: built with ko, Gateway API experimental CRDs and Traefik applied and available in %s", time.Since(t0).Round(time.Second))
	return nil
}

func encode(objs []*unstructured.Unstructured) []byte {
	var b strings.Builder
	for _, o := range objs {
		y, _ := yaml.Marshal(o.Object)
		b.WriteString("---\n")
		b.Write(y)
	}
	return []byte(b.String())
}

// clusterHTTP is an HTTP client on the node that resolves cluster.local names
// with the cluster's DNS; kube-proxy carries the connections to Services.
func clusterHTTP(c *cluster.Cluster) *http.Client {
	d := &net.Dialer{Resolver: c.Resolver(), Timeout: 5 * time.Second}
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}
