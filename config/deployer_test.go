package config_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/release"
	"github.com/berth-dev/berth/pkg/testing/chartrepo"
	"github.com/berth-dev/berth/pkg/testing/localrun"
)

// writeChart packs a chart named name with the given templates.
func writeChart(t *testing.T, name string, templates map[string]string) chartrepo.Chart {
	t.Helper()
	c, err := chartrepo.FromTemplates(name, templates)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const restrictedPod = `      securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: app
          image: example.invalid/app:1
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
`

// TestDeployer installs charts as config/'s install ServiceAccount, which runs
// Helm as the namespace's berth-deployer: what an ordinary chart needs works,
// Secrets of other namespaces stay out of reach of templates, and a chart that
// needs more is refused with 403 and leaves nothing.
func TestDeployer(t *testing.T) {
	cp.Require(t)
	applyRBAC(t)
	ctx := context.Background()
	secret, err := cp.Client.CoreV1().Secrets("berth").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "credentials-"},
		StringData: map[string]string{"password": "hunter2"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	charts := map[string]chartrepo.Chart{
		"with-rbac": writeChart(t, "with-rbac", map[string]string{
			"rbac.yaml": `apiVersion: v1
kind: ServiceAccount
metadata: {name: {{ .Release.Name }}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: {{ .Release.Name }}}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list]
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, create, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: {{ .Release.Name }}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: {{ .Release.Name }}}
subjects: [{kind: ServiceAccount, name: {{ .Release.Name }}}]
`,
			"deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      serviceAccountName: {{ .Release.Name }}
` + restrictedPod}),
		"lookup": writeChart(t, "lookup", map[string]string{
			"cm.yaml": `apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}}
data:
  berth: {{ lookup "v1" "Secret" "berth" "" | toJson | quote }}
  kube-system: {{ lookup "v1" "Secret" "kube-system" "" | toJson | quote }}
`}),
		"cluster-role": writeChart(t, "cluster-role", map[string]string{
			"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-first}\n",
			"cr.yaml": `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: {{ .Release.Name }}}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get]}]
`}),
		"privileged": writeChart(t, "privileged", map[string]string{
			"cm.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-first}\n",
			"pod.yaml": chartrepo.PrivilegedPod}),
		"escalating-role": writeChart(t, "escalating-role", map[string]string{
			"role.yaml": `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: {{ .Release.Name }}}
rules: [{apiGroups: [""], resources: [pods/exec], verbs: [create]}]
`}),
	}
	var all []chartrepo.Chart
	for _, c := range charts {
		all = append(all, c)
	}
	repo, err := chartrepo.Start(all...)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	log := slog.New(slog.DiscardHandler)
	p := release.Policy{Namespaces: []string{localrun.AppsNamespace}, Sources: []string{repo.RepoURL}, AllowPrivateAddresses: true, MaxValuesBytes: 1 << 16}
	in := &release.Installer{Configs: release.NewConfigs(as("install"), "secret", "berth-deployer", log), Policy: p, DefaultTimeout: time.Minute, Log: log,
		Fetcher: release.NewFetcher(release.FetcherOptions{Policy: p, MaxChartBytes: 1 << 20, CacheEntries: 8, IndexTTL: time.Minute})}
	req := func(chart, name string) release.Request {
		return release.Request{Chart: release.ChartRef{Name: "x/" + chart, Repo: repo.RepoURL}, ReleaseName: name, Namespace: localrun.AppsNamespace}
	}

	// An ordinary chart with its own ServiceAccount, Role and RoleBinding.
	if _, _, err := in.Install(ctx, req("with-rbac", "dep-rbac")); err != nil {
		t.Fatalf("a chart with a ServiceAccount, a Role and a RoleBinding: %v", err)
	}
	if _, err := cp.Client.RbacV1().RoleBindings(localrun.AppsNamespace).Get(ctx, "dep-rbac", metav1.GetOptions{}); err != nil {
		t.Errorf("the chart's RoleBinding: %v", err)
	}
	if _, _, err := in.Uninstall(ctx, localrun.AppsNamespace, "dep-rbac", 0); err != nil {
		t.Errorf("uninstall: %v", err)
	}

	// lookup as the deployer: a dry run (the leaking path) and a real install
	// see nothing of berth's or kube-system's Secrets.
	for _, dry := range []bool{true, false} {
		r := req("lookup", "dep-lookup")
		r.DryRun = dry
		rel, _, err := in.Install(ctx, r)
		manifest := rel.Manifest
		if !dry && err == nil {
			cm, _ := cp.Client.CoreV1().ConfigMaps(localrun.AppsNamespace).Get(ctx, "dep-lookup", metav1.GetOptions{})
			manifest = cm.Data["berth"] + cm.Data["kube-system"]
		}
		if strings.Contains(manifest, secret.Name) || strings.Contains(manifest, "hunter2") || err != nil && strings.Contains(err.Error(), secret.Name) {
			t.Errorf("lookup (dry run %v) read berth's Secrets: %v %.200s", dry, err, manifest)
		}
		if err == nil && !dry {
			_, _, _ = in.Uninstall(ctx, localrun.AppsNamespace, "dep-lookup", 0)
		}
	}

	// More than a namespace's deployer may: refused, and nothing is left.
	before := cp.Fingerprint(t, localrun.AppsNamespace)
	for _, name := range []string{"cluster-role", "privileged", "escalating-role"} {
		_, _, err := in.Install(ctx, req(name, "dep-"+name))
		if got := problem.Status(err); got != 403 {
			t.Errorf("%s: Install = %v (%d), want 403", name, err, got)
		}
		if _, err := in.Status(ctx, localrun.AppsNamespace, "dep-"+name); problem.Status(err) != 404 {
			t.Errorf("%s: a release record is left: %v", name, err)
		}
	}
	if after := cp.Fingerprint(t, localrun.AppsNamespace); after != before {
		t.Errorf("refused charts left objects:\n%s\nwas\n%s", after, before)
	}
	if _, err := cp.Client.RbacV1().ClusterRoles().Get(ctx, "dep-cluster-role", metav1.GetOptions{}); err == nil {
		t.Error("the ClusterRole was created")
	}
}
