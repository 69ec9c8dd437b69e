package portalloc

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestClaims(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := NewClaims()
	c.Put(TCP, Claim{Owner: "a/x", Port: 20000, Since: now.Unix()})
	c.Put(UDP, Claim{Owner: "a/x", Port: 20000, Since: now.Unix(), Expires: now.Unix() + 60})
	c.Put(TCP, Claim{Owner: "a/lapsed", Port: 20001, Expires: now.Unix()})
	c.Put(TCP, Claim{Owner: "ab/y", Port: 20002})
	if cl, ok := c.Find("a/x", TCP); !ok || cl.Port != 20000 {
		t.Errorf("Find(a/x, TCP) = %+v, %v", cl, ok)
	}
	if _, ok := c.Find("a/y", TCP); ok {
		t.Error("Find of an owner without a claim found one")
	}
	if n := c.Held("a", now); n != 2 {
		t.Errorf("Held(a) = %d, want 2 (a lapsed claim and another namespace's prefix do not count)", n)
	}
	if c.Drop("a/x", TCP, 20001, 0) || c.Drop("a/x", TCP, 20000, now.Unix()) || !c.Drop("a/x", TCP, 20000, 0) {
		t.Error("Drop dropped a claim on another port, or made since (another expiry), or not the claim on its port")
	}
	if ClaimKey("a/x", TCP) == ClaimKey("a/x", UDP) || ClaimKey("a/x", TCP) == ClaimKey("a/y", TCP) {
		t.Error("claim keys collide")
	}
	back, err := DecodeClaims(c.Encode())
	if err != nil || len(back.ByKey) != len(c.ByKey) {
		t.Errorf("DecodeClaims(Encode) = %v, %v", back, err)
	}
}

func TestDecodeClaimsRefusesWhatItCannotRead(t *testing.T) {
	key := ClaimKey("a/x", TCP)
	for name, data := range map[string]map[string]string{
		"not JSON":           {key: "x"},
		"key of another":     {ClaimKey("a/y", TCP): `{"o":"a/x","p":20000}`},
		"unknown protocol":   {"sctp" + strings.TrimPrefix(key, "tcp"): `{"o":"a/x","p":20000}`},
		"no protocol":        {strings.TrimPrefix(key, "tcp"): `{"o":"a/x","p":20000}`},
		"port out of range":  {key: `{"o":"a/x","p":70000}`},
		"no owner":           {key: `{"p":20000}`},
		"owner with a space": {ClaimKey("a/x y", TCP): `{"o":"a/x y","p":20000}`},
	} {
		if _, err := DecodeClaims(data); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: DecodeClaims = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestRepair(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	old, young := now.Add(-time.Hour).Unix(), now.Unix()
	c := NewClaims()
	c.Put(TCP, Claim{Owner: "a/bound", Port: 20000, Since: old, Expires: old})
	c.Put(TCP, Claim{Owner: "a/gone", Port: 20001, Since: old})
	c.Put(TCP, Claim{Owner: "a/in-flight", Port: 20002, Since: young, Expires: young + 60})
	c.Put(TCP, Claim{Owner: "a/bound-since", Port: 20003, Since: young})
	entries := map[Key]Entry{{TCP, 20000}: {Owner: "a/bound", State: Bound},
		{TCP, 20003}: {Owner: "a/bound-since", State: Reserved, Expires: young}} // read before the Bind
	bears := func(k Key, owner string) (Entry, bool) {
		e, ok := entries[k]
		return e, ok && e.Owner == owner
	}
	if n := c.Repair(bears, now.Add(-time.Minute)); n != 1 {
		t.Errorf("Repair dropped %d, want 1", n)
	}
	if cl, ok := c.Find("a/bound", TCP); !ok || cl.Expires != 0 {
		t.Errorf("bound claim = %+v, %v; want kept, no longer lapsing", cl, ok)
	}
	if _, ok := c.Find("a/gone", TCP); ok {
		t.Error("a claim no entry bears out was kept")
	}
	if _, ok := c.Find("a/in-flight", TCP); !ok {
		t.Error("a claim younger than the grace was dropped")
	}
	if cl, _ := c.Find("a/bound-since", TCP); cl.Expires != 0 {
		t.Errorf("claim bound since the entries were read = %+v, made to lapse", cl)
	}
}
