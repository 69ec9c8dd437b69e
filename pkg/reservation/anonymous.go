package reservation

import (
	"strings"

	"github.com/google/uuid"
)

// anonymousPrefix begins the name of an owner GET /getport made up.
const anonymousPrefix = "getport-"

// AnonymousOwner is a fresh owner in namespace ns for a reservation asked for
// without one (the 2018 GET /getport): <ns>/getport-<uuid>. Such a
// reservation may be named by anyone who may expose in ns (Anonymous), and
// lapses unless it is bound.
func AnonymousOwner(ns string) string { return ns + "/" + anonymousPrefix + uuid.NewString() }

// Anonymous reports whether owner is one AnonymousOwner made up: getport-
// and a UUID. (A release or Service named so in a namespace would be too;
// only those who may expose in that namespace could name its port.)
func Anonymous(owner string) bool {
	_, name, _ := strings.Cut(owner, "/")
	id, ok := strings.CutPrefix(name, anonymousPrefix)
	if !ok || len(id) != 36 {
		return false
	}
	_, err := uuid.Parse(id)
	return err == nil
}
