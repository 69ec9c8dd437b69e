package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/kubernetes"
)

// maxReviews and maxRejected bound the caches of review answers, least
// recently used first out; maxAccessKey is the largest access question kept
// (the API server's own delegating authorizer keeps none over 10,000 bytes),
// so that long names in requests cannot fill memory.
const (
	maxReviews   = 10000
	maxRejected  = 1000
	maxAccessKey = 10000
)

// reviewer asks the API server who a token is (TokenReview) and what a user may
// do (SubjectAccessReview), as a delegating API server would, and keeps each
// answer, allowed or refused, for a while. An API server that cannot be asked
// is an error and is not kept. Concurrent questions that are the same are
// asked once.
//
// It is client-go and a cache rather than k8s.io/apiserver's delegating
// authenticator and authorizer: those link its metrics, CEL and egress
// machinery, which doubled a function's time from exec to main.
type reviewer struct {
	client   kubernetes.Interface
	audience string
	// tokens are accepted tokens; rejected are refused ones, apart, so that a
	// flood of bad tokens cannot push out the good.
	tokens   *expirable.LRU[[sha256.Size]byte, *user.DefaultInfo]
	rejected *expirable.LRU[[sha256.Size]byte, struct{}]
	access   *expirable.LRU[string, bool]
	flight   singleflight.Group
	// retry is how long to wait before asking once more after a failure.
	retry time.Duration
}

func newReviewer(client kubernetes.Interface, audience string, ttl time.Duration) *reviewer {
	return &reviewer{
		client: client, audience: audience, retry: 100 * time.Millisecond,
		tokens:   expirable.NewLRU[[sha256.Size]byte, *user.DefaultInfo](maxReviews, nil, ttl),
		rejected: expirable.NewLRU[[sha256.Size]byte, struct{}](maxRejected, nil, ttl),
		access:   expirable.NewLRU[string, bool](maxReviews, nil, ttl),
	}
}

// errReviewFailed is an API server that could not be asked.
var errReviewFailed = errors.New("access review failed")

// authenticate returns the user a token is for berth's audience, nil when the
// API server does not accept it. Tokens are kept by their hash only.
func (rv *reviewer) authenticate(ctx context.Context, token string) (*user.DefaultInfo, error) {
	key := sha256.Sum256([]byte(token))
	cached := func() (*user.DefaultInfo, bool) {
		if u, ok := rv.tokens.Get(key); ok {
			return u, true
		}
		_, ok := rv.rejected.Get(key)
		return nil, ok
	}
	if u, ok := cached(); ok {
		return u, nil
	}
	v, err := rv.once(ctx, "t"+string(key[:]), func(ctx context.Context) (any, error) {
		if u, ok := cached(); ok {
			return u, nil
		}
		var st authnv1.TokenReviewStatus
		err := rv.ask(ctx, func(ctx context.Context) error {
			r, err := rv.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
				Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{rv.audience}},
			}, metav1.CreateOptions{})
			if err == nil {
				st = r.Status
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		// A token is berth's only when the API server says it was issued for
		// berth's audience, not merely that it is valid.
		if st.Authenticated && slices.Contains(st.Audiences, rv.audience) {
			u := toUser(st.User)
			rv.tokens.Add(key, u)
			return u, nil
		}
		// Kept whatever its error text: the API server words every invalid
		// token as an error, and a flood of them must not cost a review each.
		rv.rejected.Add(key, struct{}{})
		return (*user.DefaultInfo)(nil), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*user.DefaultInfo), nil
}

// once runs review once for all the callers asking key at the same time. The
// review runs apart from any caller's context (its cancellation, its values,
// its trace: it answers others too); each caller stops waiting when its own
// context ends.
func (rv *reviewer) once(ctx context.Context, key string, review func(context.Context) (any, error)) (any, error) {
	ch := rv.flight.DoChan(key, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return review(rctx)
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", errReviewFailed, ctx.Err())
	}
}

// toUser is a TokenReview's user, in the groups of every authenticated user
// (system:authenticated), as the API server itself would have it.
func toUser(in authnv1.UserInfo) *user.DefaultInfo {
	u := &user.DefaultInfo{Name: in.Username, UID: in.UID, Groups: slices.Clone(in.Groups)}
	if len(in.Extra) > 0 {
		u.Extra = map[string][]string{}
		for k, v := range in.Extra {
			u.Extra[k] = slices.Clone(v)
		}
	}
	if u.Name != user.Anonymous && !slices.Contains(u.Groups, user.AllAuthenticated) && !slices.Contains(u.Groups, user.AllUnauthenticated) {
		u.Groups = append(u.Groups, user.AllAuthenticated)
	}
	return u
}

// allowed asks whether u may do a on berth's resources.
func (rv *reviewer) allowed(ctx context.Context, u user.Info, a Attributes) (bool, error) {
	spec := authzv1.SubjectAccessReviewSpec{
		User: u.GetName(), UID: u.GetUID(), Groups: u.GetGroups(),
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: a.Namespace, Verb: a.Verb, Group: Group, Version: "*",
			Resource: a.Resource, Subresource: a.Subresource, Name: a.Name,
		},
	}
	if extra := u.GetExtra(); len(extra) > 0 {
		spec.Extra = map[string]authzv1.ExtraValue{}
		for k, v := range extra {
			spec.Extra[k] = v
		}
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return false, err
	}
	key := string(b)
	if ok, hit := rv.access.Get(key); hit {
		return ok, nil
	}
	v, err := rv.once(ctx, "a"+key, func(ctx context.Context) (any, error) {
		if ok, hit := rv.access.Get(key); hit {
			return ok, nil
		}
		var ok bool
		err := rv.ask(ctx, func(ctx context.Context) error {
			r, err := rv.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
			if err == nil {
				ok = r.Status.Allowed && !r.Status.Denied
			}
			return err
		})
		if err != nil {
			return false, err
		}
		if len(key) <= maxAccessKey {
			rv.access.Add(key, ok)
		}
		return ok, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// ask makes a review, once more after a short wait (100 ms, jittered) if the
// API server could not answer or was shedding load: a caller's request waits
// on it.
func (rv *reviewer) ask(ctx context.Context, review func(context.Context) error) error {
	err := review(ctx)
	if err != nil && transient(err) {
		select {
		case <-ctx.Done():
		case <-time.After(rv.retry + rand.N(rv.retry/5)):
			err = review(ctx)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errReviewFailed, err)
	}
	return nil
}

// transient is a failure that asking again may not repeat.
func transient(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err)
}
