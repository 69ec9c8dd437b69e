package function

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/berth-dev/berth/pkg/problem"
)

// DecodeJSON reads one JSON object from r's body into v, refusing unknown fields,
// trailing data and other media types. Its errors are problem.ErrInvalid (or
// ErrTooLarge past the body bound).
func DecodeJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return fmt.Errorf("%w: Content-Type must be application/json", problem.ErrInvalid)
		}
	}
	return decode(r.Body, v)
}

// DecodeData reads a CloudEvent's JSON data into v, as strictly as DecodeJSON.
func DecodeData(data []byte, v any) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: the event has no data", problem.ErrInvalid)
	}
	return decode(bytes.NewReader(data), v)
}

func decode(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return fmt.Errorf("%w: body over %d bytes", problem.ErrTooLarge, tooLarge.Limit)
		}
		return fmt.Errorf("%w: body is not the expected JSON: %v", problem.ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: body has data after the JSON object", problem.ErrInvalid)
	}
	return nil
}

// QueryBool reads the query parameter name as a boolean (strconv.ParseBool);
// absent is false, anything else unreadable is problem.ErrInvalid.
func QueryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: %s=%q", problem.ErrInvalid, name, problem.Clip(v))
	}
	return b, nil
}

// WriteJSON answers status with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
