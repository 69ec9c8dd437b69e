package controlplane

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// TokenClaims describe a ServiceAccount token to sign.
type TokenClaims struct {
	Namespace, ServiceAccount, UID string
	Audience                       string
	// NotBefore and Expires bound the token's life.
	NotBefore, Expires time.Time
}

// SignToken signs a ServiceAccount token with the API server's own signing key,
// claims chosen by the caller: a test makes tokens the TokenRequest API will
// not make, such as one that has already expired.
func (cp *ControlPlane) SignToken(c TokenClaims) (string, error) {
	api := cp.env.ControlPlane.APIServer
	raw, err := os.ReadFile(filepath.Join(api.CertDir, "sa-signer.key"))
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return "", errors.New("sa-signer.key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		if k, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			return "", fmt.Errorf("sa-signer.key: %w", err)
		}
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return "", fmt.Errorf("sa-signer.key holds a %T, want ECDSA", k)
	}
	claims := map[string]any{
		"iss": api.SecureServing.URL("https", "/").String(),
		"aud": []string{c.Audience}, "sub": "system:serviceaccount:" + c.Namespace + ":" + c.ServiceAccount,
		"nbf": c.NotBefore.Unix(), "iat": c.NotBefore.Unix(), "exp": c.Expires.Unix(),
		"kubernetes.io": map[string]any{"namespace": c.Namespace,
			"serviceaccount": map[string]string{"name": c.ServiceAccount, "uid": c.UID}},
	}
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT"})
	b, _ := json.Marshal(claims)
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(b)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	sig := append(pad32(r), pad32(s)...)
	return signing + "." + enc.EncodeToString(sig), nil
}

func pad32(n *big.Int) []byte {
	b := n.Bytes()
	return append(make([]byte, 32-len(b)), b...)
}
