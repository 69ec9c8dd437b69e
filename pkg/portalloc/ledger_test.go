package portalloc

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"
)

var (
	t0    = time.Unix(1_800_000_000, 0)
	small = Range{Min: 20000, Max: 20002}
	ttl   = 10 * time.Minute
	none  = func(Key) bool { return false }
)

func TestParseProtocol(t *testing.T) {
	tests := []struct {
		in      string
		want    Protocol
		wantErr error
	}{
		{"", TCP, nil}, {"tcp", TCP, nil}, {"UDP", UDP, nil}, {"Udp", UDP, nil},
		{"SCTP", "", ErrBadProtocol}, {"tcp;rm -rf", "", ErrBadProtocol},
	}
	for _, tc := range tests {
		got, err := ParseProtocol(tc.in)
		if got != tc.want || !errors.Is(err, tc.wantErr) {
			t.Errorf("ParseProtocol(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestValidateOwner(t *testing.T) {
	for _, bad := range []string{"", strings.Repeat("a", 137), "a b", "a\nb", "a\x00"} {
		if err := ValidateOwner(bad); !errors.Is(err, ErrBadOwner) {
			t.Errorf("ValidateOwner(%q) = %v, want ErrBadOwner", bad, err)
		}
	}
	for _, good := range []string{"ns/release", "client-42", "ünïcode/ok"} {
		if err := ValidateOwner(good); err != nil {
			t.Errorf("ValidateOwner(%q) = %v, want nil", good, err)
		}
	}
}

func TestOwnerNamespace(t *testing.T) {
	for _, bad := range []string{"", "gw", "/gw", "ns/", "NS/gw", "ns/g w", "ns/a/b", "-ns/gw", "ns/" + strings.Repeat("a", 73), strings.Repeat("n", 64) + "/gw", "ns/gw;rm"} {
		if _, err := OwnerNamespace(bad); !errors.Is(err, ErrOwnerNamespace) {
			t.Errorf("OwnerNamespace(%q) = %v, want ErrOwnerNamespace", bad, err)
		}
	}
	for owner, want := range map[string]string{"tenant-a/gw": "tenant-a", "ns/svc:8080": "ns", "ns/getport-0f1e.x_y": "ns"} {
		if got, err := OwnerNamespace(owner); got != want || err != nil {
			t.Errorf("OwnerNamespace(%q) = %q, %v; want %q", owner, got, err, want)
		}
	}
}

func TestReserve(t *testing.T) {
	tests := []struct {
		name     string
		entries  map[Key]Entry
		inUse    func(Key) bool
		owner    string
		proto    Protocol
		wantPort int
		wantErr  error
	}{
		{"lowest free", nil, none, "a", TCP, 20000, nil},
		{"skips ledger entries", map[Key]Entry{{TCP, 20000}: {Owner: "x", State: Bound}}, none, "a", TCP, 20001, nil},
		{"skips ports in use", nil, func(k Key) bool { return k.Port < 20002 }, "a", TCP, 20002, nil},
		{"protocols are separate", map[Key]Entry{{TCP, 20000}: {Owner: "x", State: Bound}}, none, "a", UDP, 20000, nil},
		{"owner gets its port back", map[Key]Entry{{TCP, 20001}: {Owner: "a", State: Bound}}, none, "a", TCP, 20001, nil},
		{"same number as the owner's other protocol", map[Key]Entry{{TCP, 20002}: {Owner: "a", State: Bound}}, none, "a", UDP, 20002, nil},
		{"same number as the owner's UDP port", map[Key]Entry{{UDP, 20001}: {Owner: "a", State: Bound}}, none, "a", TCP, 20001, nil},
		{"that number taken: lowest free", map[Key]Entry{{TCP, 20002}: {Owner: "a", State: Bound}, {UDP, 20002}: {Owner: "x", State: Bound}}, none, "a", UDP, 20000, nil},
		{"that number in use: lowest free", map[Key]Entry{{TCP, 20001}: {Owner: "a", State: Bound}}, func(k Key) bool { return k == Key{UDP, 20001} }, "a", UDP, 20000, nil},
		{"that number out of range: lowest free", map[Key]Entry{{TCP, 30000}: {Owner: "a", State: Bound}}, none, "a", UDP, 20000, nil},
		{"a lapsed other reservation is not followed", map[Key]Entry{{TCP, 20002}: {Owner: "a", State: Reserved, Expires: t0.Unix()}}, none, "a", UDP, 20000, nil},
		{"lapsed reservation is free", map[Key]Entry{{TCP, 20000}: {Owner: "x", State: Reserved, Expires: t0.Unix()}}, none, "a", TCP, 20000, nil},
		{"full", map[Key]Entry{
			{TCP, 20000}: {Owner: "x", State: Bound}, {TCP, 20001}: {Owner: "y", State: Bound},
		}, func(k Key) bool { return k.Port == 20002 }, "a", TCP, 0, ErrFull},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := New()
			maps.Copy(l.Entries, tc.entries)
			before := maps.Clone(l.Entries)
			k, e, err := l.Reserve(tc.owner, tc.proto, small, tc.inUse, t0, ttl)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Reserve(%q) error = %v, want %v", tc.owner, err, tc.wantErr)
			}
			if err != nil {
				if !maps.Equal(before, l.Entries) {
					t.Errorf("failed Reserve changed the ledger: %v", l.Entries)
				}
				if !strings.Contains(err.Error(), small.String()) {
					t.Errorf("Reserve error %q does not name the range", err)
				}
				return
			}
			if k.Port != tc.wantPort || k.Protocol != tc.proto || e.Owner != tc.owner || l.Entries[k].Owner != tc.owner {
				t.Errorf("Reserve(%q) = %v %+v, want port %d for the owner", tc.owner, k, e, tc.wantPort)
			}
		})
	}
}

func TestReserveRenewsAndNeverDoubles(t *testing.T) {
	l := New()
	k1, _, _ := l.Reserve("a", TCP, small, none, t0, ttl)
	later := t0.Add(5 * time.Minute)
	k2, e, _ := l.Reserve("a", TCP, small, none, later, ttl)
	if k1 != k2 || e.Expires != later.Add(ttl).Unix() {
		t.Errorf("second Reserve = %v expires %d, want %v renewed to %d", k2, e.Expires, k1, later.Add(ttl).Unix())
	}
	// After its reservation lapsed and the port went to someone else, the owner gets
	// a new port and its lapsed entry is gone.
	l.Entries[Key{TCP, 20000}] = Entry{Owner: "a", State: Reserved, Expires: t0.Unix()}
	l.Entries[Key{TCP, 20001}] = Entry{Owner: "b", State: Bound}
	delete(l.Entries, Key{TCP, 20002})
	k, _, err := l.Reserve("a", TCP, small, func(k Key) bool { return k.Port == 20000 }, t0, ttl)
	if err != nil || k.Port != 20002 {
		t.Fatalf("Reserve after lapse = %v, %v; want 20002", k, err)
	}
	n := 0
	for _, e := range l.Entries {
		if e.Owner == "a" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("owner a holds %d entries, want 1: %v", n, l.Entries)
	}
}

func TestReleaseAndBind(t *testing.T) {
	l := New()
	k, _, _ := l.Reserve("a", TCP, small, none, t0, ttl)
	if _, err := l.Bind(k, "b", "ns/svc", t0); !errors.Is(err, ErrHeld) {
		t.Errorf("Bind by another owner = %v, want ErrHeld", err)
	}
	if _, err := l.Bind(Key{TCP, 20002}, "a", "ns/svc", t0); !errors.Is(err, ErrNotReserved) {
		t.Errorf("Bind of a free port = %v, want ErrNotReserved", err)
	}
	e, err := l.Bind(k, "a", "ns/svc", t0)
	if err != nil || e.State != Bound || e.Expires != 0 || e.Service != "ns/svc" {
		t.Fatalf("Bind = %+v, %v; want bound to ns/svc without expiry", e, err)
	}
	if again, err := l.Bind(k, "a", "ns/svc", t0); err != nil || again != e {
		t.Errorf("Bind again = %+v, %v; want the same entry", again, err)
	}
	if _, err := l.Bind(k, "a", "ns/other", t0); !errors.Is(err, ErrRebind) {
		t.Errorf("Bind to another Service = %v, want ErrRebind", err)
	}
	if got := l.Expire(t0.Add(time.Hour)); len(got) != 0 {
		t.Errorf("Expire removed bound entries %v", got)
	}
	if _, err := l.Release(k, "b"); !errors.Is(err, ErrHeld) {
		t.Errorf("Release by another owner = %v, want ErrHeld", err)
	}
	if ok, err := l.Release(k, "a"); !ok || err != nil {
		t.Errorf("Release = %v, %v; want true", ok, err)
	}
	if ok, err := l.Release(k, "a"); ok || err != nil {
		t.Errorf("second Release = %v, %v; want false, nil", ok, err)
	}
}

func TestExpire(t *testing.T) {
	l := New()
	l.Reserve("a", TCP, small, none, t0, ttl)
	l.Reserve("b", TCP, small, none, t0.Add(time.Minute), ttl)
	if got := l.Expire(t0.Add(ttl - time.Second)); len(got) != 0 {
		t.Errorf("Expire before the TTL = %v, want none", got)
	}
	got := l.Expire(t0.Add(ttl))
	if len(got) != 1 || got[0].Port != 20000 || len(l.Entries) != 1 {
		t.Errorf("Expire at the TTL = %v, left %v; want only a's 20000 gone", got, l.Entries)
	}
}

func TestSweep(t *testing.T) {
	l := New()
	l.Entries[Key{TCP, 20000}] = Entry{Owner: "a", State: Bound, Service: "ns/gone"}
	l.Entries[Key{TCP, 20001}] = Entry{Owner: "b", State: Bound, Service: "ns/here"}
	l.Entries[Key{UDP, 20000}] = Entry{Owner: "c", State: Reserved, Expires: t0.Add(ttl).Unix()}
	l.Entries[Key{UDP, 20001}] = Entry{Owner: "d", State: Bound, Service: "ns/back"}
	present := map[string]bool{"ns/here": true}
	exists := func(s string) bool { return present[s] }

	marked, freed := l.Sweep(exists, t0)
	if len(freed) != 0 || len(marked) != 2 {
		t.Fatalf("first sweep marked %v freed %v; want gone and back marked, nothing freed", marked, freed)
	}
	present["ns/back"] = true
	marked, freed = l.Sweep(exists, t0.Add(time.Minute))
	if len(marked) != 0 || len(freed) != 1 || freed[0] != (Key{TCP, 20000}) {
		t.Fatalf("second sweep marked %v freed %v; want only tcp.20000 freed", marked, freed)
	}
	if e := l.Entries[Key{UDP, 20001}]; e.Orphaned != 0 {
		t.Errorf("a Service that came back still carries its orphan mark: %+v", e)
	}
	if _, ok := l.Entries[Key{UDP, 20000}]; !ok {
		t.Error("the sweep touched a reservation")
	}
}

func TestEncodeDecode(t *testing.T) {
	l := New()
	l.Reserve("ns/a", TCP, small, none, t0, ttl)
	k, _, _ := l.Reserve("ns/b", UDP, small, none, t0, ttl)
	l.Bind(k, "ns/b", "ns/svc", t0)
	data := l.Encode()
	if _, ok := data["udp.20000"]; !ok {
		t.Errorf("Encode keys = %v, want udp.20000", data)
	}
	got, err := Decode(data)
	if err != nil || !maps.Equal(got.Entries, l.Entries) {
		t.Errorf("Decode(Encode()) = %v, %v; want %v", got.Entries, err, l.Entries)
	}
	for name, bad := range map[string]map[string]string{
		"bad key":      {"sctp.1": `{"o":"a","s":"bound"}`},
		"port zero":    {"tcp.0": `{"o":"a","s":"bound"}`},
		"not JSON":     {"tcp.1": `owner=a`},
		"no owner":     {"tcp.1": `{"s":"bound"}`},
		"strange word": {"tcp.1": `{"o":"a","s":"maybe"}`},
	} {
		if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode(%s) = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestFullLedgerFitsAConfigMap(t *testing.T) {
	l := New()
	r := Range{Min: 20000, Max: 30000}
	for p := r.Min; p <= r.Max; p++ {
		l.Entries[Key{TCP, p}] = Entry{Owner: "tenant-0042/gw-0042", State: Bound,
			Since: t0.Unix(), Service: "tenant-0042/gw-0042"}
	}
	size := 0
	for k, v := range l.Encode() {
		size += len(k) + len(v)
	}
	if size >= 1<<20 {
		t.Errorf("a full TCP range of %d entries encodes to %d bytes, over a ConfigMap's 1 MiB", r.Size(), size)
	}
}

func TestUnbindPutsBackWhatBindChanged(t *testing.T) {
	l := New()
	k, reserved, _ := l.Reserve("a", TCP, small, none, t0, ttl)
	if _, err := l.Bind(k, "a", "ns/svc", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, other := range []struct{ owner, service string }{{"b", "ns/svc"}, {"a", "ns/other"}} {
		if l.Unbind(k, other.owner, other.service, reserved) {
			t.Errorf("Unbind(%s, %s) undid a binding of a to ns/svc", other.owner, other.service)
		}
	}
	if !l.Unbind(k, "a", "ns/svc", reserved) || l.Entries[k] != reserved {
		t.Fatalf("after Unbind the entry is %+v, want the reservation %+v", l.Entries[k], reserved)
	}
	if l.Unbind(k, "a", "ns/svc", reserved) {
		t.Error("Unbind of a reservation reported a binding")
	}
}

func TestUnbindToNothingFrees(t *testing.T) {
	l := New()
	k, _, _ := l.Reserve("a", TCP, small, none, t0, ttl)
	if _, err := l.Bind(k, "a", "ns/svc", t0); err != nil {
		t.Fatal(err)
	}
	if !l.Unbind(k, "a", "ns/svc", Entry{}) {
		t.Fatal("Unbind found no binding")
	}
	if e, ok := l.Entries[k]; ok {
		t.Fatalf("after Unbind to no entry, %s holds %+v", k, e)
	}
}

func TestUsage(t *testing.T) {
	r := Range{Min: 20000, Max: 20005}
	l := &Ledger{Entries: map[Key]Entry{
		{TCP, 20000}: {Owner: "a", State: Bound},
		{TCP, 20001}: {Owner: "b", State: Reserved, Expires: t0.Add(time.Minute).Unix()},
		{TCP, 20002}: {Owner: "c", State: Reserved, Expires: t0.Unix()}, // lapsed: free
		{TCP, 30000}: {Owner: "d", State: Bound},                        // out of range
		{UDP, 20000}: {Owner: "a", State: Bound},
	}}
	inUse := func(k Key) bool { return k == Key{TCP, 20003} || k == Key{TCP, 20000} }
	if got, want := l.Usage(TCP, r, inUse, t0), (Usage{Reserved: 1, Bound: 1, InUse: 1, Free: 3}); got != want {
		t.Errorf("Usage(TCP) = %+v, want %+v", got, want)
	}
	if got := l.Free(TCP, r, inUse, t0); got != 3 {
		t.Errorf("Free(TCP) = %d, want Usage's 3", got)
	}
	if got, want := l.Usage(UDP, r, none, t0), (Usage{Bound: 1, Free: 5}); got != want {
		t.Errorf("Usage(UDP) = %+v, want %+v", got, want)
	}
}
