// Package localrun runs berth's main job on one machine: a local control plane
// (the test harness), demo entry points, a chart repository on loopback, and the
// three functions as processes, chained the way Knative Triggers chain them.
// `make run` calls it, and so does the end-to-end test.
package localrun

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/extensions"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/testing/chartrepo"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
	"github.com/berth-dev/berth/pkg/testing/dataplane"
)

// The demo's namespaces and entry points. Addresses are from TEST-NET-1.
const (
	IngressNamespace = "berth-ingress"
	AppsNamespace    = "berth-apps"
	SharedIP         = "192.0.2.10"
	NginxIP          = "192.0.2.11"
	GatewayIP        = "192.0.2.12"
)

// Functions are berth's functions, in chain order.
var Functions = []string{"install", "getport", "setingress"}

// Options configure a run.
type Options struct {
	// Root is the repository's root (for functions/ and charts/).
	Root string
	// Dir holds the binaries, logs and kubeconfig of a run.
	Dir string
	// Out receives progress.
	Out io.Writer
	// Namespaces are further namespaces apps may live in, beside AppsNamespace.
	Namespaces []string
	// Env is more environment for every function (KEY=value).
	Env []string
	// Charts are more charts for the chart repository, beside the sample
	// gateway.
	Charts []chartrepo.Chart
}

// Env is a running berth.
type Env struct {
	CP *controlplane.ControlPlane
	// URLs are the functions' URLs, by name; Broker is where events go in.
	URLs   map[string]string
	Broker string
	Charts *chartrepo.Server
	// Token is the demo tenant's (AppsNamespace/DemoTenant) bearer token for
	// berth's audience; TokenFile holds it too.
	Token     string
	TokenFile string
	// DemoTraceID is the trace of Demo's chain, when the functions trace.
	DemoTraceID string

	opts        Options
	brokerToken string
	// vars are each function's environment, beside the process's own.
	vars   map[string][]string
	router *router
	srv    *http.Server
	procs  []*exec.Cmd
	wg     sync.WaitGroup
	// stopDataPlane stops the data plane's stand-in.
	stopDataPlane context.CancelFunc
}

func (o Options) say(format string, a ...any) { fmt.Fprintf(o.Out, "==> "+format+"\n", a...) }

// Start brings everything up. Close takes it down.
func Start(ctx context.Context, o Options) (*Env, error) {
	env := &Env{opts: o, URLs: map[string]string{}}
	if err := os.MkdirAll(filepath.Join(o.Dir, "bin"), 0o755); err != nil {
		return nil, err
	}
	if err := env.build(ctx); err != nil {
		return nil, err
	}
	o.say("starting etcd and kube-apiserver")
	cp, err := controlplane.Start()
	if err != nil {
		return nil, err
	}
	env.CP = cp
	if err := env.start(ctx); err != nil {
		env.Close()
		return nil, err
	}
	return env, nil
}

func (env *Env) start(ctx context.Context) error {
	o := env.opts
	kubeconfig := filepath.Join(o.Dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.CP.KubeConfig(), 0o600); err != nil {
		return err
	}
	o.say("seeding entry points in %s: shared-IP %s, ingress-nginx %s, Gateway %s", IngressNamespace, SharedIP, NginxIP, GatewayIP)
	if err := Seed(ctx, env.CP); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	// No load balancer or Gateway controller runs here: a stand-in answers
	// status as they would, so that exposures are confirmed.
	o.say("data plane: a stand-in gives shared-IP Services their address and accepts Gateway listeners and routes (no traffic)")
	gw, err := gatewayclient.NewForConfig(env.CP.Config)
	if err != nil {
		return err
	}
	dctx, stop := context.WithCancel(context.Background())
	env.stopDataPlane = stop
	dp := &dataplane.DataPlane{Core: env.CP.Client, Gateway: gw}
	env.wg.Go(func() { dp.Run(dctx) })
	if err := env.tenants(ctx); err != nil {
		return fmt.Errorf("tenants: %w", err)
	}
	c, err := chartrepo.Package(filepath.Join(o.Root, "charts", "echo-gateway"), "")
	if err != nil {
		return err
	}
	if env.Charts, err = chartrepo.Start(append([]chartrepo.Chart{c}, o.Charts...)...); err != nil {
		return err
	}
	o.say("chart repository at %s, OCI registry at %s", env.Charts.RepoURL, env.Charts.Registry)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	env.Broker = "http://" + ln.Addr().String()
	env.router = newRouter(env.URLs, env.brokerToken)
	env.srv = &http.Server{Handler: env.router, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = env.srv.Serve(ln) }()

	common := append([]string{"KUBECONFIG=" + kubeconfig, "PORT=0", "K_SINK=" + env.Broker, "LOG_LEVEL=INFO", "DRAIN_TIMEOUT=5s",
		"ALLOWED_NAMESPACES=" + strings.Join(append([]string{AppsNamespace}, o.Namespaces...), ",")}, o.Env...)
	entry := []string{"LOAD_BALANCER_NAMESPACE=" + IngressNamespace, "TCP_SERVICES_CONFIGMAP=tcp-services", "UDP_SERVICES_CONFIGMAP=udp-services"}
	envs := map[string][]string{
		// The repository is also "stable", the name 2018 clients give charts.
		"install": {"CHART_REPOSITORIES=demo=" + env.Charts.RepoURL + ",stable=" + env.Charts.RepoURL,
			"ALLOWED_CHART_SOURCES=" + env.Charts.RepoURL + "/,oci://" + env.Charts.Registry + "/charts/",
			"ALLOW_PRIVATE_CHART_SOURCES=true", "OCI_PLAIN_HTTP=true", "CREDENTIALS_NAMESPACE=" + AppsNamespace,
			"LOAD_BALANCER_NAMESPACE=" + IngressNamespace},
		"getport":    entry,
		"setingress": entry,
	}
	env.vars = map[string][]string{}
	for _, fn := range Functions {
		env.vars[fn] = slices.Concat(common, envs[fn])
		u, err := env.run(fn, env.vars[fn])
		if err != nil {
			return fmt.Errorf("start %s: %w", fn, err)
		}
		env.URLs[fn] = u
		o.say("%-10s serving at %s (log: %s)", fn, u, filepath.Join(o.Dir, fn+".log"))
	}
	return nil
}

// tenants applies config/'s access RBAC, makes the demo tenant and mints its
// token, and mints the local broker's delivery token.
func (env *Env) tenants(ctx context.Context) error {
	o := env.opts
	if err := ApplyAccess(ctx, env.CP, o.Root); err != nil {
		return err
	}
	for _, ns := range o.Namespaces { // config/ makes AppsNamespace's
		if err := ServiceAccount(ctx, env.CP.Client, ns, Deployer, Deployer); err != nil {
			return err
		}
	}
	if err := ServiceAccount(ctx, env.CP.Client, AppsNamespace, DemoTenant, "berth-tenant"); err != nil {
		return err
	}
	if err := ServiceAccount(ctx, env.CP.Client, SystemNamespace, BrokerIdentity, ""); err != nil {
		return err
	}
	var err error
	if env.Token, err = Token(ctx, env.CP.Client, AppsNamespace, DemoTenant, Audience, 12*time.Hour); err != nil {
		return err
	}
	if env.brokerToken, err = Token(ctx, env.CP.Client, SystemNamespace, BrokerIdentity, Audience, 12*time.Hour); err != nil {
		return err
	}
	env.TokenFile = filepath.Join(o.Dir, "token")
	o.say("tenant %s/%s (ClusterRole berth-tenant in %s); its token is in %s", AppsNamespace, DemoTenant, AppsNamespace, env.TokenFile)
	return os.WriteFile(env.TokenFile, []byte(env.Token), 0o600)
}

// build compiles the three functions into Dir/bin.
func (env *Env) build(ctx context.Context) error {
	for _, fn := range Functions {
		env.opts.say("building %s (the first build takes a few minutes)", fn)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(env.opts.Dir, "bin", fn), "./functions/"+fn)
		cmd.Dir = env.opts.Root
		cmd.Stdout, cmd.Stderr = env.opts.Out, env.opts.Out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", fn, err)
		}
	}
	return nil
}

// run starts a function process and returns its URL, read from its "serving"
// log line. Its log goes to Dir/<fn>.log.
func (env *Env) run(fn string, vars []string) (string, error) {
	logf, err := os.Create(filepath.Join(env.opts.Dir, fn+".log"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(filepath.Join(env.opts.Dir, "bin", fn))
	cmd.Env = append(os.Environ(), vars...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	env.procs = append(env.procs, cmd)
	addr := make(chan string, 1)
	env.wg.Add(1)
	go func() {
		defer env.wg.Done()
		defer logf.Close()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			logf.Write(append(line, '\n'))
			var l struct{ Msg, Address string }
			if json.Unmarshal(line, &l) == nil && l.Msg == "serving" {
				select {
				case addr <- l.Address:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		_, port, _ := net.SplitHostPort(a)
		return "http://127.0.0.1:" + port, nil
	case <-time.After(60 * time.Second):
		return "", fmt.Errorf("%s did not start; see %s", fn, logf.Name())
	}
}

// Close stops the functions (SIGTERM, so they drain), the router, the chart
// repository and the control plane.
func (env *Env) Close() {
	for _, p := range env.procs {
		_ = p.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range env.procs {
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
		}
	}
	if env.stopDataPlane != nil {
		env.stopDataPlane()
	}
	env.wg.Wait()
	if env.srv != nil {
		_ = env.srv.Close()
	}
	if env.Charts != nil {
		env.Charts.Close()
	}
	if env.CP != nil {
		_ = env.CP.Stop()
	}
}

// Post sends an event into berth, as a web app posting to the Broker would.
func (env *Env) Post(ctx context.Context, e event.Event) error { return post(ctx, env.Broker, e) }

// Wait returns the next event of one of types seen by the broker whose subject
// is subject (any subject if empty).
func (env *Env) Wait(ctx context.Context, subject string, types ...string) (event.Event, error) {
	return env.router.wait(ctx, func(e event.Event) bool {
		for _, t := range types {
			if e.Type() == t && (subject == "" || e.Subject() == subject) {
				return true
			}
		}
		return false
	})
}

// Received returns the events the broker has received, from the i-th on
// (0: all), each with the time it arrived.
func (env *Env) Received(i int) []Seen { return env.router.since(i) }

// InstallRequest is the demo's install.requested event: the sample gateway,
// exposed on the entry point at lbip.
func InstallRequest(id, release, lbip string) event.Event {
	return InstallRequestIn(AppsNamespace, id, release, lbip)
}

// InstallRequestIn is InstallRequest in namespace ns, the event's tenant.
func InstallRequestIn(ns, id, release, lbip string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/berth/localrun")
	e.SetType(events.InstallRequested)
	e.SetExtension(events.ExtensionTenant, ns)
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]any{
		"chartName": "demo/echo-gateway", "releaseName": release, "namespace": ns,
		"values": map[string]any{"settings.greeting": "hello from " + release},
		"expose": events.Expose{ServicePort: intstr.FromString("tcp"), Protocol: "TCP", LBIP: lbip},
	})
	return e
}

// Demo installs the sample gateway through one install.requested event and
// returns the endpoint it got.
func (env *Env) Demo(ctx context.Context) (events.EndpointExposedData, error) {
	env.opts.say("posting %s for demo/echo-gateway, exposed on %s", events.InstallRequested, SharedIP)
	e, err := env.Chain(ctx, InstallRequest("demo-1", "demo-gateway", SharedIP))
	if err != nil {
		return events.EndpointExposedData{}, err
	}
	env.DemoTraceID = TraceID(e)
	var d events.EndpointExposedData
	return d, e.DataAs(&d)
}

// Chain posts e to the broker and waits, up to two minutes, for the chain's
// last event: endpoint.exposed, or the failure that ended it (an error).
func (env *Env) Chain(ctx context.Context, e event.Event) (event.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := env.Post(ctx, e); err != nil {
		return event.Event{}, err
	}
	last, err := env.Wait(ctx, "", events.EndpointExposed, events.EndpointFailed, events.PortFailed, events.InstallFailed)
	if err != nil {
		return event.Event{}, fmt.Errorf("waiting for the endpoint: %w", err)
	}
	if last.Type() != events.EndpointExposed {
		return last, fmt.Errorf("%s: %s", last.Type(), last.Data())
	}
	return last, nil
}

// TraceID is the trace an event belongs to, from its traceparent
// extension; "" without one.
func TraceID(e event.Event) string {
	ext, ok := extensions.GetDistributedTracingExtension(e)
	if !ok {
		return ""
	}
	// version-traceid-parentid-flags
	parts := strings.Split(ext.TraceParent, "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[1]
}

// Usage prints ready-to-paste examples for the running functions.
func (env *Env) Usage(w io.Writer) {
	fmt.Fprintf(w, `
berth is running. Every call carries the demo tenant's token (ServiceAccount
%[5]s/%[9]s, audience %[10]s); without it berth answers 401.

  TOKEN=$(cat %[8]s)

  # install another gateway and expose it, with one event (the broker routes it;
  # berthtenant names the namespace the event acts in)
  curl -s %[1]s -H 'Ce-Specversion: 1.0' -H 'Ce-Id: demo-2' -H 'Ce-Source: /me' \
    -H 'Ce-Type: dev.berth.install.requested' -H 'Ce-Berthtenant: %[5]s' -H 'Content-Type: application/json' \
    -d '{"chartName":"demo/echo-gateway","releaseName":"gw-2","namespace":"%[5]s","expose":{"servicePort":"tcp","lbip":"%[6]s"}}'

  # or step by step over HTTP, berth's own way
  curl -s %[2]s/releases -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"chartName":"demo/echo-gateway","releaseName":"gw-3","namespace":"%[5]s"}'
  curl -s -H "Authorization: Bearer $TOKEN" %[3]s/ports -H 'Content-Type: application/json' -d '{"owner":"%[5]s/gw-3","lbip":"%[6]s"}'
  curl -s -H "Authorization: Bearer $TOKEN" %[4]s/exposures -H 'Content-Type: application/json' -d '{"serviceNamespace":"%[5]s","serviceName":"gw-3","servicePort":"tcp","owner":"%[5]s/gw-3","lbip":"%[6]s"}'

  # or as a 2018 client did: install by form post, then setrule its serviceName
  curl -s %[2]s/install -H "Authorization: Bearer $TOKEN" -d chartName=stable/echo-gateway
  curl -s %[4]s/setrule -H "Authorization: Bearer $TOKEN" -d serviceName=<serviceName from the answer> -d servicePort=7000

  # look around (each answers what the token may list)
  curl -s -H "Authorization: Bearer $TOKEN" %[2]s/releases
  curl -s -H "Authorization: Bearer $TOKEN" %[3]s/ports
  curl -s -H "Authorization: Bearer $TOKEN" %[4]s/exposures
  curl -s %[2]s/releases    # 401: no token
  KUBECONFIG=%[7]s kubectl get svc,cm -A

  # another tenant: a ServiceAccount bound to berth-tenant in its namespace
  KUBECONFIG=%[7]s kubectl create token %[9]s -n %[5]s --audience %[10]s

Ctrl-C stops everything.
`, env.Broker, env.URLs["install"], env.URLs["getport"], env.URLs["setingress"], AppsNamespace, SharedIP, filepath.Join(env.opts.Dir, "kubeconfig"),
		env.TokenFile, DemoTenant, Audience)
}

// Seed creates the demo namespaces (if missing) and one entry point per backend.
func Seed(ctx context.Context, cp *controlplane.ControlPlane) error {
	core := cp.Client.CoreV1()
	for _, ns := range []string{IngressNamespace, AppsNamespace} {
		if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	if _, err := cp.CreateLoadBalancer(ctx, IngressNamespace, "shared-ip", SharedIP, nil); err != nil {
		return err
	}
	if _, err := cp.CreateLoadBalancer(ctx, IngressNamespace, "ingress-nginx-controller", NginxIP, map[string]string{"app.kubernetes.io/name": "ingress-nginx"}); err != nil {
		return err
	}
	for _, cm := range []string{"tcp-services", "udp-services"} {
		if _, err := core.ConfigMaps(IngressNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cm}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	_, err := cp.CreateGateway(ctx, IngressNamespace, "shared", GatewayIP, gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType})
	return err
}
