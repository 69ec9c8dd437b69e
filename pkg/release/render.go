package release

import (
	"fmt"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
)

// renderKubeVersion is the cluster version charts are rendered and linted for.
var renderKubeVersion = &chartutil.KubeVersion{Version: "v1.36.0", Major: "1", Minor: "36"}

// Render renders the chart in folder dir with values, as `helm template` does:
// no cluster is asked anything.
func Render(dir, name, namespace string, values map[string]any) (string, error) {
	c, err := loader.LoadDir(dir)
	if err != nil {
		return "", fmt.Errorf("load chart %s: %w", dir, err)
	}
	cfg := &action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		KubeClient:   &kubefake.PrintingKubeClient{},
		Capabilities: chartutil.DefaultCapabilities,
		Log:          func(string, ...any) {},
	}
	inst := action.NewInstall(cfg)
	inst.ReleaseName, inst.Namespace = name, namespace
	inst.DryRun, inst.ClientOnly, inst.Replace = true, true, true
	inst.KubeVersion = renderKubeVersion
	rel, err := inst.Run(c, values)
	if err != nil {
		return "", fmt.Errorf("render %s: %w", dir, err)
	}
	return rel.Manifest, nil
}

// Lint lints the chart in folder dir with values, as `helm lint` does, and
// returns its findings (errors and warnings; info is left out).
func Lint(dir string, values map[string]any) []string {
	l := action.NewLint()
	l.KubeVersion = renderKubeVersion
	res := l.Run([]string{dir}, values)
	var out []string
	for _, m := range res.Messages {
		if m.Severity > support.InfoSev {
			out = append(out, m.Error())
		}
	}
	for _, err := range res.Errors {
		out = append(out, err.Error())
	}
	return out
}
