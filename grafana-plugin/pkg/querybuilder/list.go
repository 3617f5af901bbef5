package querybuilder

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// List is a multi-value filter: it decodes from a JSON string (one value,
// as single-value queries and alert rules saved before multi-value filters
// send it), a number, an array of those, or null. Strings are split at
// commas (no value of these filters contains one: "10.0.0.1, 10.0.0.2" is
// two addresses) and empty values are dropped, so "" and [] mean "no
// filter".
type List []string

// UnmarshalJSON implements json.Unmarshaler.
func (l *List) UnmarshalJSON(raw []byte) error {
	raw = bytes.TrimSpace(raw)
	var items []json.RawMessage
	switch {
	case bytes.Equal(raw, []byte("null")):
		*l = nil
		return nil
	case len(raw) > 0 && raw[0] == '[':
		if err := json.Unmarshal(raw, &items); err != nil {
			return fmt.Errorf("list: %w", err)
		}
	default:
		items = []json.RawMessage{raw}
	}
	out := List{}
	for _, it := range items {
		s, err := scalar(it)
		if err != nil {
			return err
		}
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	if len(out) == 0 {
		out = nil
	}
	*l = out
	return nil
}

// scalar reads a JSON string or number as text.
func scalar(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		return n.String(), nil
	}
	return "", fmt.Errorf("list: %s is not a string or a number", raw)
}

// IntList is a multi-value integer filter: a JSON number, a numeric
// string (what template variables give), an array of those, or null.
type IntList []int

// UnmarshalJSON implements json.Unmarshaler.
func (l *IntList) UnmarshalJSON(raw []byte) error {
	var texts List
	if err := texts.UnmarshalJSON(raw); err != nil {
		return err
	}
	var out IntList
	for _, s := range texts {
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("list: %q is not an integer", s)
		}
		if n != 0 { // 0 is the editor's "any"
			out = append(out, n)
		}
	}
	*l = out
	return nil
}
