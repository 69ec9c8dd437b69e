package localrun

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/testing/chartrepo"
)

// seedChart is a chart named as the 2018 docs name theirs: a Service
// <release>-<name> with one TCP port, and a ConfigMap <release>-values
// holding the values it was installed with, as JSON.
func seedChart(t *testing.T, name string, port int) chartrepo.Chart {
	t.Helper()
	c, err := chartrepo.FromTemplates(name, map[string]string{
		"service.yaml": `apiVersion: v1
kind: Service
metadata: {name: "{{ .Release.Name }}-` + name + `"}
spec:
  selector: {app: "{{ .Release.Name }}"}
  ports: [{name: main, port: ` + strconv.Itoa(port) + `, protocol: TCP}]
`,
		"values.yaml": `apiVersion: v1
kind: ConfigMap
metadata: {name: "{{ .Release.Name }}-values"}
data: {values.json: {{ toJson .Values | quote }}}
`,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// seedRequest is one request a 2018 client makes, its body as the 2018 docs
// or sample app publish it ({{name}} stands for what an earlier answer
// said), and what a 2018 client reads of the answer.
type seedRequest struct {
	// source is where the request is published (itye-msft/Autom8s).
	source, method, path, ct, body string
	status                         int
	// want are fields of the answer and their values ("*": any non-empty).
	want map[string]string
	// save keeps fields of the answer, as {{field}} for later requests.
	save []string
}

const (
	form     = "application/x-www-form-urlencoded"
	jsonType = "application/json"
)

// TestSeedAPI replays the 2018 API's published requests, byte for byte but
// for addresses, against the three function processes on the real API
// server with a real chart repository (named "stable", and given as
// privateChartsRepo), as the demo tenant: a 2018 client that changed its
// base URLs and added a token.
func TestSeedAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	ctx, env := startForTest(t, Options{Charts: []chartrepo.Chart{
		seedChart(t, "rabbitmq", 5672), seedChart(t, "nginx-ingress", 80), seedChart(t, "simpletest", 8080), seedChart(t, "sampleapp", 9000),
	}})
	inst, gp, si := env.URLs["install"], env.URLs["getport"], env.URLs["setingress"]
	repo := env.Charts.RepoURL
	requests := []seedRequest{
		{source: "README.md (curl)", method: "POST", path: inst + "/install", ct: jsonType,
			body:   `{"chartName":"stable/nginx-ingress", "releaseName":"myingress"}`,
			status: 201, want: map[string]string{"status": "success", "releaseName": "myingress", "serviceName": "myingress-nginx-ingress"}},
		{source: "README.md, custom settings", method: "POST", path: inst + "/install", ct: jsonType,
			body: `{
  "chartName":"stable/rabbitmq",
  "values": {
       "rabbitmq.username" : "admin" ,
       "rabbitmq.password" : "secretpassword",
       "rabbitmq.erlangCookie": "secretcookie"
    }
}`,
			status: 201, want: map[string]string{"status": "success", "releaseName": "*", "serviceName": "*"}, save: []string{"releaseName"}},
		{source: "README.md, private chart (sampleApp, lowercased)", method: "POST", path: inst + "/install", ct: jsonType,
			body: `{
  "chartName":"sampleApp",
  "releaseName":"sampleApp1",
  "privateChartsRepo": "` + repo + `/index.yaml"
}`,
			status: 201, want: map[string]string{"status": "success", "releaseName": "sampleapp1", "serviceName": "sampleapp1-sampleapp"}},
		{source: "README.md of 2018-07-11 (a chart that is not there)", method: "POST", path: inst + "/install", ct: jsonType,
			body:   "{\n  \"chartName\":\"stable/nginx-rabbitmq\"\n}",
			status: 422, want: map[string]string{"status": "failed", "reason": "*"}},
		{source: "k8s-helm-http-wrapper/README.md, option 1", method: "POST", path: inst + "/install", ct: jsonType,
			body: `{
   "chartName": "stable/nginx-ingress",
   "releaseName": "release101",
   "values": {
       "key1" : 1,
       "key2" : "value2"   
    }
}`,
			status: 201, want: map[string]string{"status": "success", "releaseName": "release101"}},
		{source: "test/helm-tests.js, delete", method: "POST", path: inst + "/delete", ct: jsonType,
			body: `{"releaseName":"release101"}`, status: 200, want: map[string]string{"status": "success"}},
		{source: "k8s-helm-http-wrapper/README.md, option 2 (private repository)", method: "POST", path: inst + "/install", ct: jsonType,
			body: `{
   "chartName": "helmrepo/simpletest",
   "privateChartsRepo": "` + repo + `/",
   "releaseName": "release101",
   "values": {
       "key1" : 1,
       "key2" : "value2"   
    }
}`,
			status: 201, want: map[string]string{"status": "success", "releaseName": "release101", "serviceName": "release101-simpletest"}},
		{source: "sample/index.js, install by form", method: "POST", path: inst + "/install", ct: form,
			body:   "chartName=stable%2Frabbitmq",
			status: 201, want: map[string]string{"status": "success", "serviceName": "*"}, save: []string{"serviceName"}},
		{source: "sample/index.js, setrule by form", method: "POST", path: si + "/setrule", ct: form,
			body:   "serviceName={{serviceName}}&servicePort=5672",
			status: 200, want: map[string]string{"status": "success", "ip": "*", "port": "*", "releaseName": "*"}},
		{source: "README.md snippet (chartName empty)", method: "POST", path: inst + "/install", ct: form,
			body: "chartName=", status: 400, want: map[string]string{"status": "failed", "reason": "*"}},
		{source: "README.md snippet, setrule GET without query (request ignores its options)", method: "GET", path: si + "/setrule",
			status: 400, want: map[string]string{"status": "failed", "reason": "*"}},
		{source: "README.md of 2018-05-16, getport", method: "GET", path: gp + "/getport",
			status: 200, want: map[string]string{"public_ip": "*", "port": "*", "release": "*"}},
		{source: "README.md of 2018-05-16, getport?lbip= (no entry point at 1.2.3.4)", method: "GET", path: gp + "/getport?lbip=1.2.3.4",
			status: 404, want: map[string]string{"status": "failed", "reason": "*"}},
		{source: "docs/deepdive.md, getport?lbip=", method: "GET", path: gp + "/getport?lbip=" + SharedIP,
			status: 200, want: map[string]string{"public_ip": SharedIP, "port": "*", "release": "*"}},
		{source: "index.js (2018-07-11 on), GET /getPort reading lbip from a JSON body", method: "GET", path: gp + "/getPort", ct: jsonType,
			body:   `{"lbip":"` + SharedIP + `"}`,
			status: 200, want: map[string]string{"public_ip": SharedIP, "port": "*", "release": "*"}, save: []string{"port", "release", "public_ip"}},
		{source: "docs/api.md, setrule naming the getport's port", method: "POST", path: si + "/setrule", ct: jsonType,
			body:   `{"serviceName":"{{serviceName}}","servicePort":5672,"loadBalancerIp":"{{public_ip}}","loadBalancerPort":{{port}},"release":"{{release}}"}`,
			status: 200, want: map[string]string{"status": "success", "ip": "{{public_ip}}", "port": "{{port}}", "releaseName": "{{release}}"}},
		{source: "ingress-server.js of 2018-07-11, GET setrule with specific* (the same rule again)", method: "GET",
			path:   si + "/setrule?serviceName={{serviceName}}&servicePort=5672&specificlb={{public_ip}}&specificport={{port}}&specificrelease={{release}}",
			status: 200, want: map[string]string{"status": "success", "ip": "{{public_ip}}", "port": "{{port}}"}},
		{source: "k8s-ingress-manager of 2018-07-04, upgrade", method: "POST", path: inst + "/upgrade", ct: jsonType,
			body:   `{"chartName":"stable/nginx-ingress","reuseValue":true,"releaseName":"myingress","values":{"tcp.20000":"svc:5672"}}`,
			status: 200, want: map[string]string{"status": "success", "releaseName": "myingress"}},
		{source: "k8s-ingress-manager of 2018-05-28, upgrade by form with values[tcp]", method: "POST", path: inst + "/upgrade", ct: form,
			body:   "chartName=stable%2Fnginx-ingress&releaseName=myingress&values%5Btcp%5D=svc%3A5672",
			status: 200, want: map[string]string{"status": "success"}},
		{source: "upgrade with the release's 2018 spelling and reuseValue as a string", method: "POST", path: inst + "/upgrade", ct: jsonType,
			body:   `{"chartName":"stable/nginx-ingress","releaseName":"MyIngress","reuseValue":"true","values":{"tcp.20000":"svc:5672"}}`,
			status: 200, want: map[string]string{"status": "success", "releaseName": "myingress"}},
		{source: "delete, as 2018 spelled the release", method: "POST", path: inst + "/delete", ct: jsonType,
			body: `{"releaseName":"MyIngress"}`, status: 200, want: map[string]string{"status": "success"}},
	}
	saved := map[string]string{}
	fill := func(s string) string {
		for k, v := range saved {
			s = strings.ReplaceAll(s, "{{"+k+"}}", v)
		}
		return s
	}
	for i, r := range requests {
		req, err := http.NewRequest(r.method, fill(r.path), strings.NewReader(fill(r.body)))
		if err != nil {
			t.Fatal(err)
		}
		if r.ct != "" {
			req.Header.Set("Content-Type", r.ct)
		}
		req.Header.Set("Authorization", "Bearer "+env.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got map[string]any
		if resp.StatusCode != r.status || json.Unmarshal(b, &got) != nil {
			t.Fatalf("%d. %s: %s %s = %d %s, want %d", i+1, r.source, r.method, fill(r.path), resp.StatusCode, b, r.status)
		}
		for k, want := range r.want {
			v := fieldText(got[k])
			if want == "*" && v == "" || want != "*" && v != fill(want) {
				t.Errorf("%d. %s: %s = %q, want %q (answer %s)", i+1, r.source, k, v, fill(want), b)
			}
		}
		for _, k := range r.save {
			saved[k] = fieldText(got[k])
		}
	}

	// What the answers said is what the cluster holds: the releases, their
	// values as --set would have set them, and the exposures.
	core := env.CP.Client.CoreV1()
	values := func(release string) map[string]any {
		t.Helper()
		cm, err := core.ConfigMaps(AppsNamespace).Get(ctx, release+"-values", metav1.GetOptions{})
		var v map[string]any
		if err != nil || json.Unmarshal([]byte(cm.Data["values.json"]), &v) != nil {
			t.Fatalf("values of %s: %v", release, err)
		}
		return v
	}
	if v := values("release101"); v["key1"] != float64(1) || v["key2"] != "value2" {
		t.Errorf("release101 values = %v, want key1 1 and key2 value2", v)
	}
	if v, _ := values(saved["releaseName"])["rabbitmq"].(map[string]any); v["username"] != "admin" || v["erlangCookie"] != "secretcookie" {
		t.Errorf("rabbitmq values = %v", v)
	}
	if _, err := core.ConfigMaps(AppsNamespace).Get(ctx, "myingress-values", metav1.GetOptions{}); err == nil {
		t.Error("the deleted release MyIngress is still there")
	}
	exposures := mustStatus(t, "GET /exposures", caller{token: "Bearer " + env.Token}.do(t, "GET", si+"/exposures", ""), 200)
	var list struct {
		Items []struct{ Service, IP string }
	}
	_ = json.Unmarshal(exposures.body, &list)
	n := 0
	for _, e := range list.Items {
		if e.Service == AppsNamespace+"/"+saved["serviceName"] {
			n++
		}
	}
	// One by the form setrule, one on the port getport reserved (named twice).
	if n != 2 {
		t.Errorf("exposures of %s = %d, want 2: %s", saved["serviceName"], n, exposures.body)
	}
}

// fieldText is a JSON field as a 2018 client would print it.
func fieldText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
