package release

import (
	"reflect"
	"testing"
)

func TestValuesTypeStringsAsSetDoes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want any
	}{
		{"2", int64(2)},
		{"0", int64(0)},
		{"-7", int64(-7)},
		{"007", "007"},
		{"2.5", "2.5"},
		{"true", true},
		{"FALSE", false},
		{"null", nil},
		{"", ""},
		{"a,b=c", "a,b=c"},
		{"{a,b}", "{a,b}"},
		{`back\slash`, `back\slash`},
		{"99999999999999999999", "99999999999999999999"},
		{"svc:5672", "svc:5672"},
		{"12345678901234567", int64(12345678901234567)},
		{"héllo, wörld", "héllo, wörld"},
		{`trailing\`, `trailing\`},
	} {
		got, err := Values(map[string]any{"v": tc.in}, nil)
		if err != nil || !reflect.DeepEqual(got["v"], tc.want) {
			t.Errorf("Values(v: %q) = %#v, %v, want %#v", tc.in, got["v"], err, tc.want)
		}
	}
}

func TestValuesTypesStringsOnly(t *testing.T) {
	got, err := Values(map[string]any{"a.n": "2", "a.s": "x,y=z", "a.j": float64(3), "a.b": "true"}, map[string]any{"o": "2"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"o": "2", "a": map[string]any{"n": int64(2), "s": "x,y=z", "j": float64(3), "b": true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Values = %#v, want %#v", got, want)
	}
}
