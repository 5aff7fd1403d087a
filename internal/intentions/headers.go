package intentions

import "github.com/meshrpc/mesh/frame"

// AppHeaders are a call's application headers (arg2) as L7 intentions read
// them: a JSON object of strings for "json" calls, Thrift's header list for
// "thrift" and "proto" calls (YARPC's proto encoding keeps thrift's); a
// "raw" call has none. Reading one allocates nothing.
type AppHeaders struct {
	Scheme []byte // the call's "as" transport header
	Raw    []byte // arg2; nil when the first frame did not hold all of it
}

// Get returns the value of header name. A JSON key or value written with
// escapes is not matched (it would need unescaping).
func (h AppHeaders) Get(name string) ([]byte, bool) {
	switch string(h.Scheme) {
	case "json":
		return jsonGet(h.Raw, name)
	case "thrift", "proto":
		return thriftGet(h.Raw, name)
	}
	return nil, false
}

// thriftGet reads Thrift's headers (frame.EachAppHeader).
func thriftGet(b []byte, name string) (found []byte, ok bool) {
	frame.EachAppHeader(b, func(k, v []byte) bool {
		if string(k) == name {
			found, ok = v, true
		}
		return !ok
	})
	return found, ok
}

// jsonGet reads the value of key name in a JSON object: a string's
// content, or another value as written.
func jsonGet(b []byte, name string) ([]byte, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case '}':
			return nil, false
		case ',':
			i++
			continue
		case '"':
		default:
			return nil, false
		}
		key, end, esc := jsonString(b, i)
		if end < 0 {
			return nil, false
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)
		match := !esc && string(key) == name
		if i < len(b) && b[i] == '"' {
			v, end, vesc := jsonString(b, i)
			if end < 0 {
				return nil, false
			}
			if match {
				return v, !vesc
			}
			i = end
			continue
		}
		end = skipValue(b, i)
		if end < 0 {
			return nil, false
		}
		if match {
			v := b[i:end]
			for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t' || v[len(v)-1] == '\n' || v[len(v)-1] == '\r') {
				v = v[:len(v)-1]
			}
			return v, true
		}
		i = end
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// jsonString reads the string starting at b[i] (a quote): its content,
// the index after it (-1: unterminated), and whether it has escapes.
func jsonString(b []byte, i int) (content []byte, end int, escaped bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return b[i+1 : j], j + 1, escaped
		}
	}
	return nil, -1, false
}

// skipValue skips the JSON value (not a string) at b[i]: -1 when it does
// not end.
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			_, end, _ := jsonString(b, i)
			if end < 0 {
				return -1
			}
			i = end - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
	}
	if depth == 0 {
		return i
	}
	return -1
}
