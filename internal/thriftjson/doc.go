// Package thriftjson calls Thrift methods with JSON: it reads a Thrift IDL
// (go.uber.org/thriftrw compiles it), encodes a method's arguments from a
// JSON object into the Thrift binary struct TChannel's thrift scheme sends
// as arg3, and decodes an answer's result struct (the return value, or a
// declared exception) back into JSON.
//
// JSON mapping: structs, exceptions and unions are objects keyed by field
// name; lists and sets are arrays; maps are objects when the key is a
// string (or enum), else arrays of [key, value] pairs; enums are their item
// names (or numbers); binary is base64; i64 is a JSON number (read without
// loss of precision).
package thriftjson
