package seed

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-dev/berth/pkg/problem"
)

var schema = Schema{
	{Name: "serviceName", Aliases: []string{"servicename"}},
	{Name: "servicePort", Kind: PortRef, Aliases: []string{"serviceport"}},
	{Name: "port", Kind: Number, Aliases: []string{"loadBalancerPort", "specificport"}},
	{Name: "wait", Kind: Flag},
	{Name: "values", Kind: Object},
	{Name: "dryRun", Skip: true},
}

type request struct {
	ServiceName string         `json:"serviceName"`
	ServicePort any            `json:"servicePort"`
	Port        int            `json:"port"`
	Wait        bool           `json:"wait"`
	Values      map[string]any `json:"values"`
}

func TestDecode(t *testing.T) {
	const js, form = "application/json", "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name, method, target, ct, body string
		want                           request
	}{
		{"JSON", "POST", "/", js, `{"serviceName":"a","servicePort":5672,"loadBalancerPort":"20000"}`, request{ServiceName: "a", ServicePort: float64(5672), Port: 20000}},
		{"form, numbers as strings", "POST", "/", form, "serviceName=a&servicePort=5672&specificport=20000", request{ServiceName: "a", ServicePort: float64(5672), Port: 20000}},
		{"form, port by name", "POST", "/", form, "serviceName=a&servicePort=amqp", request{ServiceName: "a", ServicePort: "amqp"}},
		{"form, port with spaces", "POST", "/", form, "serviceName=a&servicePort=+80", request{ServiceName: "a", ServicePort: float64(80)}},
		{"GET query, 2018's lowercase names", "GET", "/?servicename=a&serviceport=80", "", "", request{ServiceName: "a", ServicePort: float64(80)}},
		{"GET query and JSON body, agreeing", "GET", "/?port=5", js, `{"port":5,"serviceName":"a"}`, request{ServiceName: "a", Port: 5}},
		{"a name twice, agreeing", "POST", "/", js, `{"port":5,"loadBalancerPort":"5"}`, request{Port: 5}},
		{"flags as 2018 read them", "POST", "/", form, "wait=on", request{Wait: true}},
		{"flag 1", "POST", "/", js, `{"wait":1}`, request{Wait: true}},
		{"flag false", "POST", "/", js, `{"wait":"false"}`, request{}},
		{"form values[key]", "POST", "/", form, "values%5Btcp%5D=svc%3A5672&values%5Bn%5D=2", request{Values: map[string]any{"tcp": "svc:5672", "n": "2"}}},
		{"JSON null is not given", "POST", "/", js, `{"serviceName":null,"values":null}`, request{}},
		{"dryRun in the query, read by the route", "POST", "/?dryRun=true", js, `{"serviceName":"a"}`, request{ServiceName: "a"}},
		{"an empty body", "POST", "/", js, ``, request{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			if tc.ct != "" {
				r.Header.Set("Content-Type", tc.ct)
			}
			var got request
			if err := Decode(r, schema, &got); err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Decode = %+v, %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	const js, form = "application/json", "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name, method, target, ct, body string
	}{
		{"unknown field", "POST", "/", js, `{"cmd":"reboot"}`},
		{"unknown form field", "POST", "/", form, "cmd=reboot"},
		{"a key twice in a form", "POST", "/", form, "serviceName=a&serviceName=b"},
		{"a name twice, disagreeing", "POST", "/", js, `{"port":5,"specificport":6}`},
		{"query and body disagree", "GET", "/?port=5", js, `{"port":6}`},
		{"a POST's fields in the query", "POST", "/?serviceName=a", js, `{}`},
		{"dryRun in the body", "POST", "/", js, `{"dryRun":true}`},
		{"port not a number", "POST", "/", form, "port=high"},
		{"port zero", "POST", "/", form, "port=0"},
		{"port negative", "POST", "/", js, `{"port":-1}`},
		{"port a fraction", "POST", "/", js, `{"port":1.5}`},
		{"flag not a flag", "POST", "/", js, `{"wait":"maybe"}`},
		{"name a number where a string is wanted", "POST", "/", js, `{"serviceName":true}`},
		{"values not an object", "POST", "/", js, `{"values":"a=b"}`},
		{"values and values[key]", "POST", "/", js, `{"values":{"a":"1"},"values[b]":"2"}`},
		{"values[] with no key", "POST", "/", form, "values%5B%5D=1"},
		{"not JSON", "POST", "/", js, `serviceName=a`},
		{"a JSON array", "POST", "/", js, `[{"serviceName":"a"}]`},
		{"two JSON objects", "POST", "/", js, `{}{}`},
		{"not form-encoded", "POST", "/", form, "serviceName=%zz"},
		{"another media type", "POST", "/", "text/yaml", "serviceName: a"},
		{"a bad media type", "POST", "/", "application/json; ===", `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.ct)
			var got request
			err := Decode(r, schema, &got)
			if problem.Status(err) != http.StatusBadRequest || !errors.Is(err, problem.ErrInvalid) {
				t.Errorf("Decode = %+v, %v, want a 400", got, err)
			}
		})
	}
}

func TestDecodeBounded(t *testing.T) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/", strings.NewReader(`{"serviceName":"`+strings.Repeat("a", 100)+`"}`))
	r.Body = http.MaxBytesReader(w, r.Body, 32)
	var got request
	if err := Decode(r, schema, &got); problem.Status(err) != http.StatusRequestEntityTooLarge {
		t.Errorf("Decode of a body over the bound = %v, want 413", err)
	}
}

func TestPath(t *testing.T) {
	routes := []string{"/getport", "/setrule"}
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"/getport", "/getport", true},
		{"/getPort", "/getport", true},
		{"/GETPORT/", "/getport", true},
		{"/getport//", "", false},
		{"/getports", "", false},
		{"/ports", "", false},
		{"/setru\u017fe", "", false}, // U+017F folds to s in Unicode, not in Express
		{"/", "", false},
	} {
		if got, ok := Path(tc.in, routes); got != tc.want || ok != tc.ok {
			t.Errorf("Path(%q) = %q, %v, want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestAnswers(t *testing.T) {
	w := httptest.NewRecorder()
	Write(w, http.StatusCreated, map[string]any{"releaseName": "gw", "status": "deployed"})
	if w.Code != 201 || w.Body.String() != `{"releaseName":"gw","status":"success"}`+"\n" {
		t.Errorf("Write = %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	WriteError(w, problem.New(problem.ErrUnauthenticated, "no token"))
	f, ok := ReadFailure(w.Header().Get("Content-Type"), w.Body.Bytes())
	if w.Code != 401 || !ok || f.Code != 401 || f.Reason != "no token" || w.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("WriteError = %d %v %s, want a 401 refusal with WWW-Authenticate", w.Code, w.Header(), w.Body)
	}
	w = httptest.NewRecorder()
	WriteError(w, errors.New("secret detail from deep down"))
	if f, ok := ReadFailure(w.Header().Get("Content-Type"), w.Body.Bytes()); w.Code != 500 || !ok || strings.Contains(f.Reason, "secret") {
		t.Errorf("WriteError of an unclassified error = %d %s, want a 500 that does not echo it", w.Code, w.Body)
	}
}
