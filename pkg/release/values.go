package release

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"helm.sh/helm/v3/pkg/strvals"

	"github.com/berth-dev/berth/pkg/problem"
)

// Values builds a release's values: object (structured values, exactly as
// given) first, then each dotted key of dotted set on top, in key order. Keys
// take --set's syntax (a.b.c, list[0], a\.b). A string value is typed as
// --set types it, the 2018 API's meaning: "2" is the number 2, "true" and
// "false" booleans, "null" removes the key, anything else stays a string
// (commas and braces included: one value is one scalar). Any other JSON
// value keeps its type, as with --set-json. No value is ever interpreted by
// a shell or a template.
func Values(dotted map[string]any, object map[string]any) (map[string]any, error) {
	out := map[string]any{}
	if object != nil {
		// A deep copy through JSON: the request's maps are not aliased.
		b, err := json.Marshal(object)
		if err != nil {
			return nil, fmt.Errorf("%w: valuesObject: %v", ErrBadRequest, err)
		}
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, fmt.Errorf("%w: valuesObject: %v", ErrBadRequest, err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(dotted)) {
		if err := checkKey(k); err != nil {
			return nil, err
		}
		if str, ok := dotted[k].(string); ok {
			// As --set reads it (an int64 stays exact), one scalar.
			if err := strvals.ParseInto(k+"="+escapeSet(str), out); err != nil {
				return nil, fmt.Errorf("%w: values[%q]: %v", ErrBadRequest, problem.Clip(k), err)
			}
			continue
		}
		v, err := json.Marshal(dotted[k])
		if err != nil {
			return nil, fmt.Errorf("%w: values[%q]: %v", ErrBadRequest, problem.Clip(k), err)
		}
		if err := strvals.ParseJSON(k+"="+string(v), out); err != nil {
			return nil, fmt.Errorf("%w: values[%q]: %v", ErrBadRequest, problem.Clip(k), err)
		}
	}
	return out, nil
}

// escapeSet escapes every rune of a --set value, so that Helm's parser reads
// it as one scalar (typed as --set types it): no comma starts another
// assignment and no brace a list.
func escapeSet(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteByte('\\')
		b.WriteRune(r)
	}
	return b.String()
}

// MaxListIndex bounds a list index in a values key (list[255]): Helm's own
// bound, 65536, lets 4 KB of keys expand to hundreds of MiB.
const MaxListIndex = 255

// checkKey refuses keys --set could not mean: empty, overlong, or holding
// characters that separate assignments, or a list index over MaxListIndex.
func checkKey(k string) error {
	if k == "" || len(k) > 256 || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") || strings.Contains(k, "..") {
		return fmt.Errorf("%w: values key %q", ErrBadRequest, problem.Clip(k))
	}
	for rest := k; ; {
		i := strings.IndexByte(rest, '[')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], ']')
		if j < 0 {
			break
		}
		if n, err := strconv.Atoi(rest[i+1 : i+j]); err == nil && (n < 0 || n > MaxListIndex) {
			return fmt.Errorf("%w: values key %q: list index over %d", ErrBadRequest, problem.Clip(k), MaxListIndex)
		}
		rest = rest[i+j:]
	}
	for _, r := range k {
		if r == '=' || r == ',' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: values key %q has %q", ErrBadRequest, problem.Clip(k), r)
		}
	}
	return nil
}

// redactKeys are parts of value names whose values are hidden when a release is
// shown.
var redactKeys = []string{"password", "passwd", "secret", "token", "key", "credential", "auth", "cert", "private"}

// Redact returns a copy of values with secret-looking entries replaced.
func Redact(values map[string]any) map[string]any {
	out := make(map[string]any, len(values))
	for k, v := range values {
		lk := strings.ToLower(k)
		if slices.ContainsFunc(redactKeys, func(s string) bool { return strings.Contains(lk, s) }) {
			out[k] = "(redacted)"
			continue
		}
		switch t := v.(type) {
		case map[string]any:
			out[k] = Redact(t)
		case []any:
			l := make([]any, len(t))
			for i, e := range t {
				if m, ok := e.(map[string]any); ok {
					l[i] = Redact(m)
				} else {
					l[i] = e
				}
			}
			out[k] = l
		default:
			out[k] = v
		}
	}
	return out
}
