// Package seed speaks the 2018 API berth replaces (itye-msft/Autom8s), so that
// a client of it moves to berth by changing its base URLs and adding a token.
//
// A 2018 request is read as Express read it: the query string, then a JSON or
// form-encoded body on top (its GET /getPort read a JSON body), every form
// value a string. Fields are read under their 2018 names (and the names of the
// 2018 API's earlier versions) beside berth's own, numbers may come as numeric
// strings, and flags as 2018 read them. What is read is then one JSON object
// under berth's names, decoded as strictly as berth's own routes decode theirs.
//
// A 2018 answer is berth's own answer with "status": "success" beside it; a
// refusal is {"status": "failed", "reason"} with berth's status code and its
// problem's type and title.
package seed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/pkg/problem"
)

// Kind is how a field's value is read.
type Kind int

const (
	// Text is a string; a JSON number is its text.
	Text Kind = iota
	// Number is a whole number over 0: a JSON number or a numeric string.
	Number
	// PortRef is a Service port, by number or name: a numeric string is the
	// number.
	PortRef
	// Flag is a boolean: JSON true or false, or the text true, 1, on or yes
	// (2018's test, any case) and false, 0, off, no or empty.
	Flag
	// Object is a JSON object, or form keys name[key]=value.
	Object
	// JSON is any JSON value, passed on as sent.
	JSON
)

// Field is one field a route reads.
type Field struct {
	// Name is berth's name for the field.
	Name string
	Kind Kind
	// Aliases are the field's 2018 names.
	Aliases []string
	// Skip is a query parameter the route reads itself (dryRun): allowed in
	// the query and left out of what is decoded; unknown in a body.
	Skip bool
}

// Schema is the fields a route reads.
type Schema []Field

var (
	// ErrBadRequest is a request that is not a 2018 request of the route.
	ErrBadRequest = problem.New(problem.ErrInvalid, "not a request this route reads")
	errMediaType  = problem.New(problem.ErrInvalid, "Content-Type must be application/json or application/x-www-form-urlencoded")
)

// Decode reads r's query string and body as the route's 2018 request, by
// schema, into v (a struct with berth's JSON names): unknown fields, a field
// given twice with different values, and values of the wrong kind are
// ErrBadRequest. The body is as bounded as the server bounds it.
func Decode(r *http.Request, schema Schema, v any) error {
	in, err := read(r, schema.skipped)
	if err != nil {
		return err
	}
	out, err := schema.normalize(in)
	if err != nil {
		return err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return nil
}

// read returns the request's fields: a GET's query string (but for the
// names skip reports, which the route reads itself), then the body's beside
// them. 2018 read no other request's query: there, a query parameter that
// is not skipped is refused, so that no value rides in a URL. Form and
// query values are strings; a repeated key is refused.
func read(r *http.Request, skip func(string) bool) (map[string]any, error) {
	fields := map[string]any{}
	if err := addForm(fields, r.URL.RawQuery, "query"); err != nil {
		return nil, err
	}
	maps.DeleteFunc(fields, func(k string, _ any) bool { return skip(k) })
	if r.Method != http.MethodGet {
		for k := range fields {
			return nil, fmt.Errorf("%w: %s reads its fields from the body, not the query (%q)", ErrBadRequest, r.Method, problem.Clip(k))
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("%w: body over %d bytes", problem.ErrTooLarge, tooLarge.Limit)
		}
		return nil, fmt.Errorf("%w: read body: %v", ErrBadRequest, err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return fields, nil
	}
	mt := "application/json"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return nil, errMediaType
		}
	}
	switch mt {
	case "application/json":
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil || obj == nil {
			return nil, fmt.Errorf("%w: the body is not a JSON object", ErrBadRequest)
		}
		if dec.More() {
			return nil, fmt.Errorf("%w: the body has data after the JSON object", ErrBadRequest)
		}
		for k, v := range obj {
			if err := add(fields, k, v); err != nil {
				return nil, err
			}
		}
		return fields, nil
	case "application/x-www-form-urlencoded":
		return fields, addForm(fields, string(body), "body")
	}
	return nil, errMediaType
}

func addForm(fields map[string]any, raw, where string) error {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return fmt.Errorf("%w: the %s is not form-encoded: %v", ErrBadRequest, where, err)
	}
	for k, vs := range q {
		if len(vs) > 1 {
			return fmt.Errorf("%w: %q is given %d times", ErrBadRequest, problem.Clip(k), len(vs))
		}
		if err := add(fields, k, vs[0]); err != nil {
			return err
		}
	}
	return nil
}

// add adds a body's field to the query's, refusing one the query gave with
// another value.
func add(fields map[string]any, k string, v any) error {
	if prev, ok := fields[k]; ok && !equal(prev, v) {
		return fmt.Errorf("%w: %q is given in the query and the body, with different values", ErrBadRequest, problem.Clip(k))
	}
	fields[k] = v
	return nil
}

// normalize turns the fields sent into berth's names and types.
func (s Schema) normalize(in map[string]any) (map[string]any, error) {
	out := map[string]any{}
	from := map[string]string{} // berth's name → the name it was sent under
	keyed := map[string]bool{}  // objects sent as form keys name[key]
	put := func(f Field, sentAs string, v any) error {
		v, err := f.Kind.read(v)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadRequest, sentAs, err)
		}
		if keyed[f.Name] {
			return fmt.Errorf("%w: %s is given as an object and as form keys", ErrBadRequest, sentAs)
		}
		if prev, ok := out[f.Name]; ok && !equal(prev, v) {
			return fmt.Errorf("%w: %s and %s disagree", ErrBadRequest, from[f.Name], sentAs)
		}
		out[f.Name], from[f.Name] = v, sentAs
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(in)) {
		if in[k] == nil {
			continue // JSON null: not given
		}
		f, ok := s.field(k)
		if ok && !f.Skip {
			if err := put(f, k, in[k]); err != nil {
				return nil, err
			}
			continue
		}
		// name[key]=value: a form's way to send an object.
		name, key, nested := strings.Cut(k, "[")
		if f, ok = s.field(name); nested && ok && f.Kind == Object && strings.HasSuffix(key, "]") && len(key) > 1 {
			if _, set := out[f.Name]; set && !keyed[f.Name] {
				return nil, fmt.Errorf("%w: %s is given as an object and as form keys", ErrBadRequest, name)
			}
			obj, _ := out[f.Name].(map[string]any)
			if obj == nil {
				obj = map[string]any{}
				out[f.Name], from[f.Name], keyed[f.Name] = obj, name, true
			}
			obj[strings.TrimSuffix(key, "]")] = in[k]
			continue
		}
		return nil, fmt.Errorf("%w: unknown field %q (fields: %s)", ErrBadRequest, problem.Clip(k), s.names())
	}
	return out, nil
}

func (s Schema) field(name string) (Field, bool) {
	for _, f := range s {
		if f.Name == name || slices.Contains(f.Aliases, name) {
			return f, true
		}
	}
	return Field{}, false
}

// skipped reports whether name is a query parameter the route reads itself.
func (s Schema) skipped(name string) bool {
	f, ok := s.field(name)
	return ok && f.Skip
}

func (s Schema) names() string {
	var n []string
	for _, f := range s {
		if !f.Skip {
			n = append(n, f.Name)
			n = append(n, f.Aliases...)
		}
	}
	return strings.Join(n, ", ")
}

// equal compares two values of a field as sent: a query's "5" is a body's 5.
func equal(a, b any) bool {
	text := func(v any) any {
		switch t := v.(type) {
		case json.Number:
			return t.String()
		case bool:
			return strconv.FormatBool(t)
		}
		return v
	}
	x, _ := json.Marshal(text(a))
	y, _ := json.Marshal(text(b))
	return bytes.Equal(x, y)
}

func (k Kind) read(v any) (any, error) {
	switch k {
	case Text:
		switch t := v.(type) {
		case string:
			return t, nil
		case json.Number:
			return t.String(), nil
		}
		return nil, errors.New("want a string")
	case Number:
		return number(v)
	case PortRef:
		if s, ok := v.(string); ok {
			if _, err := strconv.Atoi(strings.TrimSpace(s)); err != nil {
				return s, nil // a port's name
			}
		}
		return number(v)
	case Flag:
		return flag(v)
	case Object:
		if m, ok := v.(map[string]any); ok {
			return m, nil
		}
		return nil, errors.New("want an object")
	}
	return v, nil
}

func number(v any) (any, error) {
	var s string
	switch t := v.(type) {
	case string:
		s = strings.TrimSpace(t)
	case json.Number:
		s = t.String()
	default:
		return nil, errors.New("want a number")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("%q is not a whole number over 0", problem.Clip(s))
	}
	return n, nil
}

func flag(v any) (any, error) {
	var s string
	switch t := v.(type) {
	case bool:
		return t, nil
	case string:
		s = t
	case json.Number:
		s = t.String()
	default:
		return nil, errors.New("want true or false")
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "on", "yes":
		return true, nil
	case "false", "0", "off", "no", "":
		return false, nil
	}
	return nil, fmt.Errorf("%q is not true or false", problem.Clip(s))
}

// Success is what every 2018 answer carries.
const Success = "success"

// Write answers status with v's fields and "status": "success". v must
// marshal to a JSON object without a "status" of its own.
func Write(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	var obj map[string]json.RawMessage
	if err == nil {
		err = json.Unmarshal(b, &obj)
	}
	if err != nil {
		WriteError(w, err)
		return
	}
	obj["status"] = json.RawMessage(`"` + Success + `"`)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(obj)
}

// Failure is a 2018 refusal, with berth's problem beside it.
type Failure struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
	Type   string `json:"type"`
	Title  string `json:"title"`
	// Code repeats the HTTP status.
	Code int `json:"code"`
}

// WriteError answers err as a 2018 refusal, with berth's status code (as
// problem.Write chooses it, headers included) and the problem's detail as
// its reason.
func WriteError(w http.ResponseWriter, err error) int {
	d := problem.Prepare(w, err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(d.Status)
	_ = json.NewEncoder(w).Encode(Failure{Status: "failed", Reason: d.Detail, Type: d.Type, Title: d.Title, Code: d.Status})
	return d.Status
}

// Path returns the route among routes that path names as Express matched
// paths (ASCII letters in any case, one trailing slash), and whether there
// is one.
func Path(path string, routes []string) (string, bool) {
	p := path
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	for _, r := range routes {
		if asciiEqualFold(p, r) {
			return r, true
		}
	}
	return "", false
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	lower := func(c byte) byte {
		if 'A' <= c && c <= 'Z' {
			return c + 'a' - 'A'
		}
		return c
	}
	for i := range len(a) {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

// ReadFailure reads an answer as a 2018 client reads a refusal: JSON with
// status "failed" and a reason. It reports whether the answer is one.
func ReadFailure(contentType string, body []byte) (Failure, bool) {
	var f Failure
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt != "application/json" || json.Unmarshal(body, &f) != nil {
		return f, false
	}
	return f, f.Status == "failed" && f.Reason != "" && f.Code >= 400
}
